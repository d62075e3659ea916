//! The trajectory queue between the service's intake and the trainer. Validated pairs
//! wait here, at most `learner.queue_capacity` of them (a full queue holds the pushing
//! stream back, and that stream only); one staleness rule decides at both ends — a batch
//! too old is refused at intake, a pair that grew too old while queued is dropped when
//! the trainer takes it — and the queue keeps the counters of what was accepted,
//! rejected and dropped as stale, for `Status` and the metrics. A pair is trained on
//! once: one whose content the queue accepted before (within a batch or across batches,
//! whatever its sequence number, version or reward) is dropped as a duplicate.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use model::sampling::{sample, SamplingConfig, Vocabulary};
use model::transformer::Transformer;

use crate::metrics as m;

/// One prompt's pair of samples as the learner trains on it.
#[derive(Clone, Debug)]
pub struct Pair {
    pub prompt: Vec<u32>,
    /// `(tokens, behaviour log-probs)` per sample.
    pub samples: Vec<(Vec<u32>, Vec<f32>)>,
    pub reward: f32,
    /// The policy version that sampled it.
    pub version: u64,
}

/// Two samples of `model` for each of `prompts` (row `r` seeded `first_seed + r`), as
/// pairs sampled by `version` with `reward(i)` for the `i`-th prompt: the batches that
/// tests and benchmarks hand the learner (actors send theirs over gRPC).
pub fn sample_pairs(
    model: &Transformer,
    prompts: Vec<Vec<u32>>,
    vocabulary: &Vocabulary,
    cfg: &SamplingConfig,
    first_seed: u64,
    version: u64,
    reward: impl Fn(usize) -> f32,
) -> Result<Vec<Pair>, tch::TchError> {
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .flat_map(|p| [p.clone(), p.clone()])
        .collect();
    let seeds: Vec<u64> = (first_seed..first_seed + rows.len() as u64).collect();
    let s = sample(model, &rows, &seeds, vocabulary, cfg)?;
    let mut samples = s.tokens.into_iter().zip(s.logprobs);
    Ok(prompts
        .into_iter()
        .enumerate()
        .map(|(i, prompt)| Pair {
            prompt,
            samples: samples.by_ref().take(2).collect(),
            reward: reward(i),
            version,
        })
        .collect())
}

/// A pair waiting for the trainer, and the client that sent it.
#[derive(Debug)]
pub struct Queued {
    pub pair: Pair,
    pub actor_id: u64,
}

/// The intake's end of the queue, shared by every trajectory stream (the queue closes
/// when it is dropped).
#[derive(Debug)]
pub struct Queue {
    tx: mpsc::Sender<Queued>,
    tally: Arc<Tally>,
    seen: Mutex<Seen>,
}

/// How many accepted pairs the queue remembers to refuse again (about 40 bytes each:
/// 40 MiB when full, reached after a million accepted pairs).
pub const REMEMBERED_PAIRS: usize = 1 << 20;

/// The pairs accepted so far (the last [`REMEMBERED_PAIRS`]), by a hash of their
/// content keyed at random per process, so that a client cannot make another's pair
/// collide with one it sent.
#[derive(Debug)]
struct Seen {
    keys: RandomState,
    set: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl Seen {
    fn new(capacity: usize) -> Seen {
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
    fn first_time(&mut self, pair: &Pair) -> bool {
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

/// The trainer's end of the queue.
#[derive(Debug)]
pub struct Receiver {
    rx: mpsc::Receiver<Queued>,
    tally: Arc<Tally>,
}

/// The staleness rule and the counters, which both ends keep.
#[derive(Debug)]
struct Tally {
    max_staleness: u64,
    depth: AtomicUsize,
    accepted: AtomicU64,
    rejected: AtomicU64,
    stale: AtomicU64,
}

impl Tally {
    /// The staleness rule: sampled by `version`, trained on by `current`.
    fn too_stale(&self, current: u64, version: u64) -> bool {
        current.saturating_sub(version) > self.max_staleness
    }

    fn dropped_stale(&self, n: u64) {
        self.stale.fetch_add(n, Ordering::SeqCst);
        metrics::counter!(m::DROPPED, "reason" => "stale").increment(n);
    }

    fn counts(&self) -> Counts {
        Counts {
            depth: self.depth.load(Ordering::SeqCst),
            accepted: self.accepted.load(Ordering::SeqCst),
            rejected: self.rejected.load(Ordering::SeqCst),
            stale: self.stale.load(Ordering::SeqCst),
        }
    }
}

/// What went through the queue so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pairs waiting now.
    pub depth: usize,
    pub accepted: u64,
    pub rejected: u64,
    pub stale: u64,
}

/// The queue closed: the trainer is gone (the learner is shutting down).
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

/// A batch the trainer takes: its pairs (in a canonical order) and their mean staleness.
#[derive(Debug)]
pub struct Batch {
    pub pairs: Vec<Pair>,
    pub mean_staleness: f64,
}

impl Queue {
    /// A queue of `capacity` pairs; pairs more than `max_staleness` versions behind the
    /// learner are not trained on.
    pub fn new(capacity: usize, max_staleness: u64) -> (Queue, Receiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let tally = Arc::new(Tally {
            max_staleness,
            depth: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        });
        (
            Queue {
                tx,
                tally: tally.clone(),
                seen: Mutex::new(Seen::new(REMEMBERED_PAIRS)),
            },
            Receiver { rx, tally },
        )
    }

    /// Queues one batch's pairs, waiting while the queue is full; counts them accepted
    /// and returns how many. A batch too stale for the learner's `current` version is
    /// refused whole and counted stale: `Ok(0)`. A pair accepted before is dropped and
    /// counted rejected as a `duplicate`.
    pub async fn push(
        &self,
        pairs: Vec<Pair>,
        version: u64,
        current: u64,
        actor_id: u64,
    ) -> Result<usize, Closed> {
        let n = pairs.len();
        let t = &self.tally;
        if t.too_stale(current, version) {
            t.dropped_stale(n as u64);
            tracing::debug!(
                actor_id,
                staleness = current - version,
                "refused a stale batch"
            );
            return Ok(0);
        }
        let pairs: Vec<Pair> = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            pairs.into_iter().filter(|p| seen.first_time(p)).collect()
        };
        if pairs.len() < n {
            self.rejected((n - pairs.len()) as u64, "duplicate");
            tracing::warn!(
                actor_id,
                duplicates = n - pairs.len(),
                "dropped pairs accepted before: a pair is trained on once"
            );
        }
        let n = pairs.len();
        for pair in pairs {
            // Counted before it is queued, so that the trainer's decrement never comes
            // first.
            let depth = t.depth.fetch_add(1, Ordering::SeqCst) + 1;
            metrics::gauge!(m::QUEUE_DEPTH).set(depth as f64);
            if self.tx.send(Queued { pair, actor_id }).await.is_err() {
                t.depth.fetch_sub(1, Ordering::SeqCst);
                return Err(Closed);
            }
        }
        t.accepted.fetch_add(n as u64, Ordering::SeqCst);
        metrics::counter!(m::ACCEPTED).increment(n as u64);
        Ok(n)
    }

    /// Counts `n` trajectories of a batch refused by validation, under `reason`.
    pub fn rejected(&self, n: u64, reason: &'static str) {
        self.tally.rejected.fetch_add(n, Ordering::SeqCst);
        metrics::counter!(m::DROPPED, "reason" => reason).increment(n);
    }

    pub fn counts(&self) -> Counts {
        self.tally.counts()
    }
}

impl Receiver {
    /// What went through the queue so far.
    pub fn counts(&self) -> Counts {
        self.tally.counts()
    }

    /// The next `size` pairs fresh enough for the learner's `current` version (those
    /// that grew too stale while queued are dropped and counted), in a canonical order
    /// (by content: the same pairs arriving in another order give the same step, so
    /// synchronous runs are reproducible); `None` when `stop` is set or every sender is
    /// gone.
    pub async fn next_batch(
        &mut self,
        size: usize,
        current: u64,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Batch> {
        let mut pairs = Vec::with_capacity(size);
        let mut staleness_sum = 0.0;
        while pairs.len() < size {
            let item = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => None,
                item = self.rx.recv() => item,
            }?;
            let t = &self.tally;
            let depth = t.depth.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
            metrics::gauge!(m::QUEUE_DEPTH).set(depth as f64);
            let staleness = current.saturating_sub(item.pair.version);
            metrics::histogram!(m::STALENESS).record(staleness as f64);
            if t.too_stale(current, item.pair.version) {
                t.dropped_stale(1);
                tracing::debug!(
                    actor_id = item.actor_id,
                    staleness,
                    "dropped a stale trajectory"
                );
                continue;
            }
            staleness_sum += staleness as f64;
            pairs.push(item.pair);
        }
        pairs.sort_by(|a, b| {
            (&a.prompt, a.version, &a.samples[..])
                .partial_cmp(&(&b.prompt, b.version, &b.samples[..]))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mean_staleness = staleness_sum / pairs.len().max(1) as f64;
        Some(Batch {
            pairs,
            mean_staleness,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pair(prompt: u32, version: u64) -> Pair {
        Pair {
            prompt: vec![prompt],
            samples: vec![(vec![1], vec![-0.5]), (vec![2], vec![-0.7])],
            reward: 0.5,
            version,
        }
    }

    #[tokio::test]
    async fn one_staleness_rule_at_intake_and_in_the_queue() {
        let (q, mut rx) = Queue::new(8, 2);
        let (_stop_tx, mut stop) = watch::channel(false);
        // At intake: two versions behind is fresh, three is stale and refused whole.
        assert_eq!(q.push(vec![pair(1, 3), pair(2, 3)], 3, 5, 7).await, Ok(2));
        assert_eq!(q.push(vec![pair(3, 2)], 2, 5, 7).await, Ok(0));
        assert_eq!(q.push(vec![pair(4, 4)], 4, 5, 7).await, Ok(1));
        assert_eq!(
            q.counts(),
            Counts {
                depth: 3,
                accepted: 3,
                rejected: 0,
                stale: 1
            }
        );
        // The learner moved to version 6 meanwhile: the pairs of version 3 grew stale in
        // the queue and are dropped; the batch waits for fresh ones.
        assert_eq!(q.push(vec![pair(6, 6), pair(5, 6)], 6, 6, 7).await, Ok(2));
        let b = rx.next_batch(2, 6, &mut stop).await.unwrap();
        let prompts: Vec<u32> = b.pairs.iter().map(|p| p.prompt[0]).collect();
        // Version 4 (staleness 2) and the first of version 6, in canonical order.
        assert_eq!(prompts, [4, 6]);
        assert_eq!(b.mean_staleness, 1.0);
        assert_eq!(
            q.counts(),
            Counts {
                depth: 1,
                accepted: 5,
                rejected: 0,
                stale: 3
            }
        );
        q.rejected(4, "malformed");
        assert_eq!(q.counts().rejected, 4);
    }

    #[tokio::test]
    async fn a_pair_is_accepted_once_whatever_batch_version_or_reward_it_comes_with() {
        let (q, mut rx) = Queue::new(16, 10);
        let (_stop_tx, mut stop) = watch::channel(false);
        // The same pair three times in one batch: once.
        assert_eq!(q.push(vec![pair(1, 3); 3], 3, 3, 7).await, Ok(1));
        // Again in a later batch, under a new version, with a new reward, its samples
        // swapped, from another client: never again.
        let mut again = pair(1, 4);
        again.reward = 1.5;
        again.samples.reverse();
        assert_eq!(q.push(vec![again, pair(2, 4)], 4, 4, 8).await, Ok(1));
        // A sample that differs in one log-probability is another pair.
        let mut other = pair(1, 4);
        other.samples[1].1[0] = -0.71;
        assert_eq!(q.push(vec![other], 4, 4, 7).await, Ok(1));
        let c = q.counts();
        assert_eq!((c.accepted, c.rejected, c.depth), (3, 3, 3));
        let b = rx.next_batch(3, 4, &mut stop).await.unwrap();
        assert_eq!(b.pairs.len(), 3);
    }

    #[test]
    fn the_memory_of_pairs_is_bounded_and_forgets_the_oldest() {
        let mut seen = Seen::new(2);
        assert!(seen.first_time(&pair(1, 0)));
        assert!(seen.first_time(&pair(2, 0)));
        assert!(!seen.first_time(&pair(1, 0)));
        assert!(seen.first_time(&pair(3, 0)));
        assert_eq!((seen.set.len(), seen.order.len()), (2, 2));
        // Pair 1 was the oldest remembered: forgotten.
        assert!(seen.first_time(&pair(1, 0)));
        assert!(!seen.first_time(&pair(3, 0)));
    }

    #[tokio::test]
    async fn the_trainer_stops_on_the_signal_or_when_every_sender_is_gone() {
        let (q, mut rx) = Queue::new(4, 10);
        let (stop_tx, mut stop) = watch::channel(false);
        q.push(vec![pair(1, 0)], 0, 0, 1).await.unwrap();
        stop_tx.send(true).unwrap();
        // The signal comes first, even with pairs waiting.
        assert!(rx.next_batch(1, 0, &mut stop).await.is_none());
        let (_stop_tx, mut stop) = watch::channel(false);
        let b = rx.next_batch(1, 0, &mut stop).await.unwrap();
        assert_eq!(b.pairs.len(), 1);
        // The intake's end dropped: the queue is closed.
        drop(q);
        assert!(rx.next_batch(1, 0, &mut stop).await.is_none());
    }

    #[tokio::test]
    async fn a_full_queue_holds_the_pusher_until_the_trainer_takes() {
        let (q, mut rx) = Queue::new(1, 10);
        let q = std::sync::Arc::new(q);
        let (_stop_tx, mut stop) = watch::channel(false);
        q.push(vec![pair(1, 0)], 0, 0, 1).await.unwrap();
        let pusher = {
            let q = q.clone();
            tokio::spawn(async move { q.push(vec![pair(2, 0)], 0, 0, 1).await })
        };
        let b = rx.next_batch(2, 0, &mut stop).await.unwrap();
        assert_eq!(b.pairs.len(), 2);
        assert_eq!(pusher.await.unwrap(), Ok(1));
        assert_eq!(q.counts().depth, 0);
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_and_keeps_its_depth() {
        let (q, rx) = Queue::new(2, 10);
        drop(rx);
        assert_eq!(q.push(vec![pair(1, 0)], 0, 0, 1).await, Err(Closed));
        assert_eq!(q.counts().depth, 0);
    }
}
