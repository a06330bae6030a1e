//! A map that holds at most a given number of entries: past it, the
//! entry inserted first goes. What the flood control and the guests' rate
//! limits keep per address or key, so that an attacker who sends from
//! ever new (spoofed) addresses cannot grow the host's memory.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map of at most `max` entries; inserting a new key into a full map
/// evicts the oldest inserted key, in O(1) (amortized).
///
/// Keys are hashed with a per-process random key (SipHash), so that
/// nobody can choose keys that collide.
pub struct Bounded<K, V> {
    map: HashMap<K, (V, u64), RandomState>,
    /// Keys in insertion order, with the sequence number they were
    /// inserted with: a key removed (or inserted again) leaves a stale
    /// pair here, skipped when met and dropped by [`Bounded::compact`].
    order: VecDeque<(K, u64)>,
    next: u64,
    max: usize,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    /// An empty map of at most `max` entries (at least one).
    pub fn new(max: usize) -> Bounded<K, V> {
        Bounded {
            map: HashMap::default(),
            order: VecDeque::new(),
            next: 0,
            max: max.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The most entries it holds.
    pub fn max(&self) -> usize {
        self.max
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|(v, _)| v)
    }

    /// Inserts or replaces `key`'s value (a replaced key keeps its place
    /// in the order); returns the entry evicted to make room, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some(slot) = self.map.get_mut(&key) {
            slot.0 = value;
            return None;
        }
        let evicted = if self.map.len() >= self.max {
            self.pop_oldest()
        } else {
            None
        };
        let seq = self.next;
        self.next += 1;
        self.order.push_back((key.clone(), seq));
        self.map.insert(key, (value, seq));
        self.compact();
        evicted
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let removed = self.map.remove(key).map(|(v, _)| v);
        self.compact();
        removed
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(|k, (v, _)| keep(k, v));
        self.compact();
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|(v, _)| v)
    }

    /// Removes the oldest inserted entry still there.
    fn pop_oldest(&mut self) -> Option<(K, V)> {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|(_, s)| *s == seq) {
                return self.map.remove(&key).map(|(v, _)| (key, v));
            }
        }
        None
    }

    /// Drops the stale pairs of the order once they outnumber the
    /// entries: the order stays within twice the map, at O(1) amortized.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, seq)| map.get(k).is_some_and(|(_, s)| s == seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_goes_first() {
        let mut m = Bounded::new(3);
        for k in 0..3 {
            assert!(m.insert(k, k * 10).is_none());
        }
        // Replacing keeps the place: 0 is still the oldest.
        assert!(m.insert(0, 1).is_none());
        assert_eq!(m.insert(3, 30), Some((0, 1)));
        assert_eq!(m.remove(&1), Some(10));
        assert!(m.insert(4, 40).is_none());
        assert_eq!(m.insert(5, 50), Some((2, 20)));
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&4), Some(&40));
    }

    #[test]
    fn memory_stays_bounded_whatever_the_churn() {
        let mut m = Bounded::new(100);
        for k in 0..100_000u32 {
            m.insert(k, ());
            if k % 3 == 0 {
                m.remove(&(k / 2));
            }
            assert!(m.len() <= 100);
            assert!(m.order.len() <= 2 * m.len() + 17, "{}", m.order.len());
        }
        m.retain(|k, _| k % 2 == 0);
        assert!(m.map.keys().all(|k| k % 2 == 0));
    }
}
