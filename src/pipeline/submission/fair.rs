//! Fair share of the create slots (SPEC section 7): round-robin among the manifests that
//! have something to send, weighted by their `priority` (high 4, normal 2, low 1), as a
//! smooth weighted round-robin (the one nginx uses): at each turn every candidate gains
//! its weight, the one with the most credit is chosen and pays the sum of the weights.
//! Turns interleave (4:2:1 gives H N H L H N H, not H H H H N N L), and a manifest that
//! starts sending gets a turn within the sum of the weights at worst.

use std::collections::HashMap;

/// The credit of each manifest that is sending; kept in memory (a restart starts every
/// manifest level, which is fair too).
#[derive(Debug, Default)]
pub struct FairShare {
    credit: HashMap<u64, i64>,
}

impl FairShare {
    /// Chooses the next manifest among `candidates` (manifest id, weight). Ties go to the
    /// oldest manifest (the smallest id). Manifests that are not candidates any more
    /// (nothing to send) are forgotten.
    pub fn choose(&mut self, candidates: &[(u64, u32)]) -> Option<u64> {
        self.credit
            .retain(|id, _| candidates.iter().any(|(candidate, _)| candidate == id));
        let total: i64 = candidates
            .iter()
            .map(|(_, weight)| i64::from(*weight))
            .sum();
        for (id, weight) in candidates {
            *self.credit.entry(*id).or_insert(0) += i64::from(*weight);
        }
        let chosen = candidates
            .iter()
            .map(|(id, _)| (*id, self.credit.get(id).copied().unwrap_or(0)))
            .max_by(|(a_id, a), (b_id, b)| a.cmp(b).then(b_id.cmp(a_id)))?
            .0;
        if let Some(credit) = self.credit.get_mut(&chosen) {
            *credit -= total;
        }
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns(fair: &mut FairShare, candidates: &[(u64, u32)], n: usize) -> Vec<u64> {
        (0..n).filter_map(|_| fair.choose(candidates)).collect()
    }

    #[test]
    fn turns_follow_the_weights_and_interleave() {
        let mut fair = FairShare::default();
        let picks = turns(&mut fair, &[(1, 4), (2, 2), (3, 1)], 70);
        let count = |id| picks.iter().filter(|p| **p == id).count();
        assert_eq!((count(1), count(2), count(3)), (40, 20, 10));
        // Interleaved: the high-priority manifest never takes more than 2 turns in a row.
        assert!(
            picks
                .windows(3)
                .all(|w| !(w[0] == 1 && w[1] == 1 && w[2] == 1)),
            "{picks:?}"
        );
    }

    #[test]
    fn a_manifest_that_starts_sending_gets_a_turn_at_once() {
        let mut fair = FairShare::default();
        // A big normal manifest has been sending alone for a long time.
        turns(&mut fair, &[(1, 2)], 1_000);
        // A small low-priority one arrives: it gets a turn within the sum of the weights.
        let picks = turns(&mut fair, &[(1, 2), (2, 1)], 3);
        assert!(picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn equal_weights_alternate_oldest_first_and_nothing_to_choose_is_none() {
        let mut fair = FairShare::default();
        assert_eq!(turns(&mut fair, &[(7, 2), (3, 2)], 4), vec![3, 7, 3, 7]);
        assert_eq!(fair.choose(&[]), None);
    }
}
