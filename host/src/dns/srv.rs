//! RFC 2782 target ordering: SRV records sorted by priority, and within a
//! priority by weighted random selection.

/// One SRV record as the ordering needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, without a trailing dot; "" or "." means "service
    /// decidedly not available at this domain" (RFC 2782).
    pub target: String,
}

impl SrvRecord {
    /// A target of "." says the service is not offered here at all.
    pub fn is_unavailable(&self) -> bool {
        self.target.is_empty() || self.target == "."
    }
}

/// Orders SRV records for trying one after another: lowest priority first;
/// within a priority, RFC 2782's weighted selection, where `random(n)`
/// returns a number uniformly in `0..=n` (injected so that tests choose).
/// Records whose target is "." are dropped; at most `limit` records are
/// returned, since DNS data is not ours to trust.
pub fn order(
    mut records: Vec<SrvRecord>,
    limit: usize,
    random: &mut impl FnMut(u32) -> u32,
) -> Vec<SrvRecord> {
    records.retain(|r| !r.is_unavailable());
    // Weight 0 first inside a priority, as RFC 2782 asks, so that they get
    // a small chance of being picked rather than none.
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(records.len().min(limit));
    let mut rest = records.as_slice();
    while !rest.is_empty() && ordered.len() < limit {
        let priority = rest[0].priority;
        let end = rest
            .iter()
            .position(|r| r.priority != priority)
            .unwrap_or(rest.len());
        let (group, tail) = rest.split_at(end);
        let mut group = group.to_vec();
        while !group.is_empty() && ordered.len() < limit {
            // Saturating: a 64 KiB answer holds few enough records never
            // to reach u32::MAX, but the code need not rely on it.
            let total = group
                .iter()
                .fold(0u32, |sum, r| sum.saturating_add(u32::from(r.weight)));
            let last = group.len() - 1;
            let index = if total == 0 {
                // All weights 0: RFC 2782 gives no preference, so spread
                // the load evenly rather than always taking the first.
                usize::try_from(random(u32::try_from(last).unwrap_or(u32::MAX)))
                    .map_or(last, |i| i.min(last))
            } else {
                let pick = random(total).min(total);
                let mut running = 0u32;
                group
                    .iter()
                    .position(|r| {
                        running = running.saturating_add(u32::from(r.weight));
                        running >= pick
                    })
                    .unwrap_or(last)
            };
            ordered.push(group.remove(index));
        }
        rest = tail;
    }
    ordered
}

/// A uniform random number in `0..=n` for [`order`], from this thread's
/// generator (`crate::random`), not a system call per lookup.
pub fn random_up_to(n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    // n + 1 fits in u64, and the remainder in u32; over 64 random bits
    // the modulo bias is negligible.
    (crate::random::u64() % (u64::from(n) + 1)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.to_string(),
        }
    }

    fn ports(records: &[SrvRecord]) -> Vec<u16> {
        records.iter().map(|r| r.port).collect()
    }

    #[test]
    fn lower_priority_first_whatever_the_weights() {
        let records = vec![srv(20, 100, 2, "b"), srv(10, 1, 1, "a"), srv(30, 0, 3, "c")];
        for pick in [0, 1, 1000] {
            let ordered = order(records.clone(), 16, &mut |n| pick.min(n));
            assert_eq!(ports(&ordered), vec![1, 2, 3]);
        }
    }

    #[test]
    fn weighted_selection_follows_the_running_sum() {
        // Weights 0, 10, 30 (weight 0 moved first, the rest in the order
        // given): running sums 0, 10, 40.
        let records = vec![srv(1, 10, 2, "b"), srv(1, 30, 3, "c"), srv(1, 0, 1, "a")];
        // 0 picks the weight-0 record (running sum 0 >= 0).
        assert_eq!(
            ports(&order(records.clone(), 16, &mut |_| 0)),
            vec![1, 2, 3]
        );
        // 40 picks the last one first; then of {0, 10}, 10 picks "b".
        assert_eq!(
            ports(&order(records.clone(), 16, &mut |n| n)),
            vec![3, 2, 1]
        );
        // 5 is within "b"'s share (1..=10); then of {0, 30}, 5 picks "c".
        assert_eq!(ports(&order(records, 16, &mut |n| 5.min(n))), vec![2, 3, 1]);
    }

    #[test]
    fn weights_spread_the_first_choice() {
        // With the OS's randomness, a weight of 3:1 makes both come first
        // sometimes; 400 draws make "never" vanishingly unlikely.
        let records = vec![srv(1, 75, 1, "a"), srv(1, 25, 2, "b")];
        let mut firsts = [0usize; 3];
        for _ in 0..400 {
            let ordered = order(records.clone(), 16, &mut random_up_to);
            firsts[usize::from(ordered[0].port)] += 1;
            assert_eq!(ordered.len(), 2);
        }
        assert!(firsts[1] > firsts[2], "{firsts:?}");
        assert!(firsts[2] > 0, "{firsts:?}");
    }

    #[test]
    fn all_zero_weights_pick_uniformly() {
        let records = vec![srv(1, 0, 1, "a"), srv(1, 0, 2, "b"), srv(1, 0, 3, "c")];
        assert_eq!(
            ports(&order(records.clone(), 16, &mut |_| 0)),
            vec![1, 2, 3]
        );
        // random(2) = 2 takes "c" first; then random(1) = 1 takes "b".
        assert_eq!(ports(&order(records, 16, &mut |n| n)), vec![3, 2, 1]);
    }

    #[test]
    fn dot_targets_are_dropped_and_the_count_is_bounded() {
        let records = vec![srv(0, 0, 1, "."), srv(0, 0, 2, "")];
        assert!(order(records, 16, &mut random_up_to).is_empty());

        let many: Vec<_> = (0..1000).map(|i| srv(i % 7, i, i, "x")).collect();
        let ordered = order(many, 16, &mut random_up_to);
        assert_eq!(ordered.len(), 16);
        assert!(ordered.windows(2).all(|w| w[0].priority <= w[1].priority));
        assert!(ordered.iter().all(|r| r.priority == 0));
    }

    #[test]
    fn random_never_out_of_range() {
        for n in [0, 1, 2, 65535 * 16] {
            for _ in 0..50 {
                assert!(random_up_to(n) <= n);
            }
        }
    }
}
