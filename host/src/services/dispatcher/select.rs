//! The order a selection tries a set's destinations in, by algorithm
//! (`ds_select_dst`'s `alg`): the first is chosen, the others are the
//! failover list of `next`. Only destinations up take part.

use std::sync::atomic::Ordering;

use super::{Set, State};

/// How to choose (the WIT's `algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// A hash of some text of the request (Call-ID, From, To, R-URI).
    Hash(u64),
    RoundRobin,
    /// A random number drawn by the caller.
    Random(u64),
    Priority,
    Weight,
}

/// FNV-1a: the same text hashes alike on every node and every run, so
/// that a call's requests reach one destination whichever node relays them.
pub fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The indices of the destinations up, the chosen first, then the
/// fallbacks; empty when none is up.
pub fn order(set: &Set, algorithm: Algorithm) -> Vec<usize> {
    let up: Vec<usize> = (0..set.dests.len())
        .filter(|&i| set.dests[i].state() == State::Up)
        .collect();
    if up.is_empty() {
        return up;
    }
    match algorithm {
        Algorithm::Hash(h) => {
            // Over every destination, then on to the next one up: a
            // destination going down moves only its own calls.
            let n = set.dests.len();
            let start = (h % n as u64) as usize;
            let first = (0..n)
                .map(|k| (start + k) % n)
                .find(|i| up.contains(i))
                .unwrap_or(up[0]);
            rotate_to(&up, first)
        }
        Algorithm::RoundRobin => {
            // Among those up: with one of three down, the other two share
            // evenly (Kamailio's turn over all of them would not).
            let turn = set.turn.fetch_add(1, Ordering::Relaxed);
            let first = up[(turn % up.len() as u64) as usize];
            rotate_to(&up, first)
        }
        Algorithm::Random(r) => {
            let first = up[(r % up.len() as u64) as usize];
            rotate_to(&up, first)
        }
        Algorithm::Priority => {
            let mut by_priority = up;
            // Stable: equal priorities keep the order written.
            by_priority.sort_by_key(|&i| std::cmp::Reverse(set.dests[i].priority));
            by_priority
        }
        Algorithm::Weight => weighted(set, &up),
    }
}

/// `up` from `first` on, wrapping.
fn rotate_to(up: &[usize], first: usize) -> Vec<usize> {
    let at = up.iter().position(|&i| i == first).unwrap_or(0);
    up[at..].iter().chain(&up[..at]).copied().collect()
}

/// Smooth weighted round-robin (as nginx's): each destination gains its
/// weight, the richest is chosen and pays the total. Over any `total`
/// selections each gets exactly its share, spread out rather than in runs.
/// The fallbacks are the others by weight, heaviest first.
fn weighted(set: &Set, up: &[usize]) -> Vec<usize> {
    let total: i64 = up.iter().map(|&i| i64::from(set.dests[i].weight)).sum();
    let mut rest: Vec<usize> = up.to_vec();
    rest.sort_by_key(|&i| std::cmp::Reverse(set.dests[i].weight));
    if total == 0 {
        return rest;
    }
    let mut current = set
        .current_weights
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    current.resize(set.dests.len(), 0);
    let mut best = up[0];
    for &i in up {
        current[i] += i64::from(set.dests[i].weight);
        if current[i] > current[best] {
            best = i;
        }
    }
    current[best] -= total;
    drop(current);
    rest.retain(|&i| i != best);
    let mut out = vec![best];
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::super::config::{DestinationConfig, SetConfig};
    use super::*;

    fn set(weights: &[u32]) -> Set {
        Set::new(&SetConfig {
            id: 1,
            destinations: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| DestinationConfig {
                    uri: format!("sip:10.0.0.{}", i + 1),
                    weight: w,
                    priority: i as i32,
                    attrs: String::new(),
                    probe: true,
                    disabled: false,
                })
                .collect(),
        })
    }

    fn counts(set: &Set, algorithm: impl Fn(u64) -> Algorithm, n: u64) -> Vec<u64> {
        let mut counts = vec![0; set.dests.len()];
        for k in 0..n {
            counts[order(set, algorithm(k))[0]] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_shares_evenly_among_those_up() {
        let s = set(&[1, 1, 1]);
        assert_eq!(counts(&s, |_| Algorithm::RoundRobin, 300), [100, 100, 100]);
        s.dests[2].set_state(State::Down);
        assert_eq!(counts(&s, |_| Algorithm::RoundRobin, 300), [150, 150, 0]);
        // The fallbacks are the others up, in turn.
        assert_eq!(order(&s, Algorithm::RoundRobin).len(), 2);
    }

    #[test]
    fn hashes_stick_and_move_only_the_down_destinations_calls() {
        let s = set(&[1, 1, 1]);
        let h = hash("call-1@host");
        let first = order(&s, Algorithm::Hash(h))[0];
        assert_eq!(order(&s, Algorithm::Hash(h))[0], first);
        let other = (first + 1) % 3;
        s.dests[other].set_state(State::Down);
        assert_eq!(order(&s, Algorithm::Hash(h))[0], first);
        s.dests[first].set_state(State::Down);
        let moved = order(&s, Algorithm::Hash(h));
        assert_eq!(moved.len(), 1);
        assert_ne!(moved[0], first);
    }

    #[test]
    fn weights_are_shared_exactly_and_priority_orders() {
        let s = set(&[1, 2, 7]);
        assert_eq!(counts(&s, |_| Algorithm::Weight, 100), [10, 20, 70]);
        assert_eq!(order(&s, Algorithm::Priority), [2, 1, 0]);
        s.dests[2].set_state(State::Disabled);
        assert_eq!(order(&s, Algorithm::Priority), [1, 0]);
        s.dests[0].set_state(State::Down);
        s.dests[1].set_state(State::Down);
        assert!(order(&s, Algorithm::Priority).is_empty());
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
