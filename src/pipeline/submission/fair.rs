//! Fair share of the create slots (SPEC section 7): round-robin among the manifests that
//! have something to send, weighted by their `priority` (high 4, normal 2, low 1), as
//! stride scheduling: each manifest in the queue has a pass; the one with the lowest pass
//! goes next and its pass grows by [`STRIDE`] / weight (high 1, normal 2, low 4). Turns
//! interleave (4:2:1 gives H N L H H N H H N L…, never three H in a row), and a manifest
//! that joins starts at the pass of the last turn, so it gets a turn within the sum of
//! the weights at worst. Choosing costs O(log n) however many manifests wait.

use std::collections::{BTreeSet, HashMap};

/// The pass one turn costs a manifest of weight 1 (4 is a multiple of every weight).
pub const STRIDE: u64 = 4;

/// The manifests that may have something to send, in the order of their turns; kept in
/// memory (a restart starts every manifest level, which is fair too).
#[derive(Debug, Default)]
pub struct ReadyQueue {
    /// (pass, manifest id): ties go to the oldest manifest (the smallest id).
    order: BTreeSet<(u64, u64)>,
    pass: HashMap<u64, u64>,
    /// The pass of the last turn: where a manifest that joins starts.
    now: u64,
}

impl ReadyQueue {
    /// The manifest may have something to send (no change if it is queued already).
    pub fn insert(&mut self, id: u64) {
        if self.pass.contains_key(&id) {
            return;
        }
        self.pass.insert(id, self.now);
        self.order.insert((self.now, id));
    }

    /// Takes the manifest whose turn it is out of the queue. It comes back with
    /// [`ReadyQueue::charge`] if it sent something, or [`ReadyQueue::insert`] when it
    /// may have something again.
    pub fn pop(&mut self) -> Option<u64> {
        let (pass, id) = self.order.pop_first()?;
        self.pass.remove(&id);
        self.now = self.now.max(pass);
        Some(id)
    }

    /// A manifest taken by [`ReadyQueue::pop`] had its turn: it joins again, behind
    /// by the cost of a turn at its weight.
    pub fn charge(&mut self, id: u64, weight: u32) {
        let pass = self.now + STRIDE / u64::from(weight.clamp(1, 4));
        if let Some(old) = self.pass.insert(id, pass) {
            self.order.remove(&(old, id));
        }
        self.order.insert((pass, id));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` turns among manifests that always have something to send.
    fn turns(queue: &mut ReadyQueue, weights: &[(u64, u32)], n: usize) -> Vec<u64> {
        for (id, _) in weights {
            queue.insert(*id);
        }
        let weight = |id| weights.iter().find(|(w, _)| *w == id).map_or(2, |w| w.1);
        (0..n)
            .filter_map(|_| {
                let id = queue.pop()?;
                queue.charge(id, weight(id));
                Some(id)
            })
            .collect()
    }

    #[test]
    fn turns_follow_the_weights_and_interleave() {
        let mut queue = ReadyQueue::default();
        let picks = turns(&mut queue, &[(1, 4), (2, 2), (3, 1)], 70);
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
        let mut queue = ReadyQueue::default();
        // A big normal manifest has been sending alone for a long time.
        turns(&mut queue, &[(1, 2)], 1_000);
        // A small low-priority one arrives: it gets a turn within the sum of the weights.
        let picks = turns(&mut queue, &[(1, 2), (2, 1)], 3);
        assert!(picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn equal_weights_alternate_oldest_first_and_an_empty_queue_has_no_turn() {
        let mut queue = ReadyQueue::default();
        assert_eq!(turns(&mut queue, &[(7, 2), (3, 2)], 4), vec![3, 7, 3, 7]);
        let mut empty = ReadyQueue::default();
        assert_eq!(empty.pop(), None);
    }

    #[test]
    fn a_manifest_is_queued_once_and_one_with_nothing_to_send_leaves() {
        let mut queue = ReadyQueue::default();
        queue.insert(5);
        queue.insert(5);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.pop(), Some(5));
        // Not charged (nothing to send): gone until it is inserted again.
        assert!(queue.is_empty());
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn choosing_among_ten_thousand_manifests_stays_fair() {
        let mut queue = ReadyQueue::default();
        let weights: Vec<(u64, u32)> = (0..10_000).map(|id| (id, 1 + (id % 3) as u32)).collect();
        let picks = turns(&mut queue, &weights, 40_000);
        // Every manifest had a turn within the first round (the sum of the weights).
        let mut seen = std::collections::HashSet::new();
        for id in &picks[..20_000] {
            seen.insert(*id);
        }
        assert_eq!(seen.len(), 10_000);
    }
}
