//! The queue's memory of the pairs it accepted, so that a pair is trained on once
//! whatever batch, sequence number, version or reward it comes back with.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use crate::queue::Pair;

/// How many accepted pairs the queue remembers to refuse again (about 40 bytes each:
/// 40 MiB when full, reached after a million accepted pairs).
pub(crate) const REMEMBERED_PAIRS: usize = 1 << 20;

/// The pairs accepted so far (the last [`REMEMBERED_PAIRS`]), by a hash of their
/// content keyed at random per process, so that a client cannot make another's pair
/// collide with one it sent.
#[derive(Debug)]
pub(crate) struct Seen {
    keys: RandomState,
    set: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl Seen {
    pub(crate) fn new(capacity: usize) -> Seen {
        Seen {
            keys: RandomState::new(),
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// The content of a pair: its prompt and its two samples (tokens and behaviour
    /// log-probabilities) in either order; not the reward, version or batch it came in.
    fn key(&self, pair: &Pair) -> u64 {
        let mut samples: Vec<u64> = pair
            .samples
            .iter()
            .map(|(tokens, logprobs)| {
                let mut h = self.keys.build_hasher();
                tokens.hash(&mut h);
                logprobs.iter().for_each(|l| l.to_bits().hash(&mut h));
                h.finish()
            })
            .collect();
        samples.sort_unstable();
        self.keys.hash_one((&pair.prompt, samples))
    }

    /// Remembers `pair`; false when it was seen before.
    pub(crate) fn first_time(&mut self, pair: &Pair) -> bool {
        let key = self.key(pair);
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(prompt: u32) -> Pair {
        Pair {
            prompt: vec![prompt],
            samples: vec![(vec![1], vec![-0.5]), (vec![2], vec![-0.7])],
            reward: 0.5,
            version: 0,
        }
    }

    #[test]
    fn the_memory_of_pairs_is_bounded_and_forgets_the_oldest() {
        let mut seen = Seen::new(2);
        assert!(seen.first_time(&pair(1)));
        assert!(seen.first_time(&pair(2)));
        assert!(!seen.first_time(&pair(1)));
        assert!(seen.first_time(&pair(3)));
        assert_eq!((seen.set.len(), seen.order.len()), (2, 2));
        // Pair 1 was the oldest remembered: forgotten.
        assert!(seen.first_time(&pair(1)));
        assert!(!seen.first_time(&pair(3)));
    }
}
