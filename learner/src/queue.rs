//! The trajectory queue between the service's intake and the trainer. Validated pairs
//! wait here, at most `learner.queue_capacity` of them (a full queue holds the pushing
//! stream back, and that stream only); one staleness rule decides at both ends — a batch
//! too old is refused at intake, a pair that grew too old while queued is dropped when
//! the trainer takes it — and the queue keeps the counters of what was accepted,
//! rejected and dropped as stale, for `Status` and the metrics. A pair is trained on
//! once: one whose content the queue accepted before (within a batch or across batches,
//! whatever its sequence number, version or reward) is dropped as a duplicate.
//!
//! Every accepted pair is accounted for: it waits (in the queue or in a batch not yet
//! full), expired (grew too stale while waiting) or was taken by the trainer, so that
//! `accepted = depth + expired + taken` whenever no push is under way. And no client
//! holds more than its share of the queue: one with pairs waiting may add more only
//! while it holds at most `capacity / clients with pairs waiting`, so a client that
//! filled the queue waits behind a newcomer instead of ahead of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch, Notify};

use model::sampling::{sample, SamplingConfig, Vocabulary};
use model::transformer::Transformer;

use crate::metrics as m;
use crate::seen::{Seen, REMEMBERED_PAIRS};

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

/// The trainer's end of the queue.
#[derive(Debug)]
pub struct Receiver {
    rx: mpsc::Receiver<Queued>,
    tally: Arc<Tally>,
}

/// The staleness rule, the counters and each client's share, which both ends keep.
#[derive(Debug)]
struct Tally {
    max_staleness: u64,
    capacity: usize,
    depth: AtomicUsize,
    accepted: AtomicU64,
    rejected: AtomicU64,
    stale: AtomicU64,
    expired: AtomicU64,
    taken: AtomicU64,
    /// Pairs in the queue (or about to be) per client.
    held: Mutex<HashMap<u64, usize>>,
    /// Signalled when a pair leaves the queue.
    room: Notify,
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
            expired: self.expired.load(Ordering::SeqCst),
            taken: self.taken.load(Ordering::SeqCst),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, usize>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `client` may add `n` pairs within its share, and books them.
    async fn reserve(&self, client: u64, n: usize) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut held = self.held();
                let mine = held.get(&client).copied().unwrap_or(0);
                let others = held.iter().filter(|&(&c, &h)| c != client && h > 0).count();
                let share = self.capacity / (others + 1);
                // A client with nothing waiting may always add a batch (the queue's
                // capacity still bounds the whole).
                if mine == 0 || mine + n <= share {
                    *held.entry(client).or_insert(0) += n;
                    return;
                }
            }
            room.await;
        }
    }

    /// `n` of `client`'s pairs left the queue (or never entered it).
    fn release(&self, client: u64, n: usize) {
        let mut held = self.held();
        if let Some(h) = held.get_mut(&client) {
            *h = h.saturating_sub(n);
            if *h == 0 {
                held.remove(&client);
            }
        }
        drop(held);
        self.room.notify_waiters();
    }
}

/// What went through the queue so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accepted pairs waiting now (in the queue or in a batch not yet full).
    pub depth: usize,
    pub accepted: u64,
    /// Refused by validation or as duplicates.
    pub rejected: u64,
    /// Refused as stale at intake, or expired.
    pub stale: u64,
    /// Accepted, then dropped as they grew too stale while waiting.
    pub expired: u64,
    /// Handed to the trainer in batches.
    pub taken: u64,
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
            capacity: capacity.max(1),
            depth: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
            room: Notify::new(),
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

    /// Queues one batch's pairs, waiting while the queue is full or `actor_id` holds
    /// its share of it; counts them accepted (the batch whole, once its last pair is
    /// queued) and returns how many. A batch too stale for the learner's `current`
    /// version is refused whole and counted stale: `Ok(0)`. A pair accepted before is
    /// dropped and counted rejected as a `duplicate`.
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
        if n == 0 {
            return Ok(0);
        }
        t.reserve(actor_id, n).await;
        for (i, pair) in pairs.into_iter().enumerate() {
            // Counted before it is queued, so that the trainer's decrement never comes
            // first.
            let depth = t.depth.fetch_add(1, Ordering::SeqCst) + 1;
            metrics::gauge!(m::QUEUE_DEPTH).set(depth as f64);
            if self.tx.send(Queued { pair, actor_id }).await.is_err() {
                // The trainer is gone, and with it what this batch had queued.
                t.depth.fetch_sub(i + 1, Ordering::SeqCst);
                t.release(actor_id, n - i);
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
            t.release(item.actor_id, 1);
            let staleness = current.saturating_sub(item.pair.version);
            metrics::histogram!(m::STALENESS).record(staleness as f64);
            if t.too_stale(current, item.pair.version) {
                t.dropped_stale(1);
                t.expired.fetch_add(1, Ordering::SeqCst);
                let depth = t.depth.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
                metrics::gauge!(m::QUEUE_DEPTH).set(depth as f64);
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
        // Taken only as a whole batch: pairs of one not yet full still wait.
        let t = &self.tally;
        t.taken.fetch_add(pairs.len() as u64, Ordering::SeqCst);
        let depth = t
            .depth
            .fetch_sub(pairs.len(), Ordering::SeqCst)
            .saturating_sub(pairs.len());
        metrics::gauge!(m::QUEUE_DEPTH).set(depth as f64);
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
                stale: 1,
                expired: 0,
                taken: 0,
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
                stale: 3,
                expired: 2,
                taken: 2,
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

    #[tokio::test]
    async fn every_accepted_pair_is_waiting_expired_or_taken() {
        let (q, mut rx) = Queue::new(16, 1);
        let (stop_tx, mut stop) = watch::channel(false);
        let balanced = |c: Counts| c.accepted == c.depth as u64 + c.expired + c.taken;
        for v in 0..4 {
            let batch = (0..3).map(|i| pair(10 * v + i, v as u64)).collect();
            q.push(batch, v as u64, v as u64, 1).await.unwrap();
        }
        assert!(balanced(q.counts()), "{:?}", q.counts());
        // At version 3 the pairs of versions 0 and 1 expire; a batch of 4 takes the rest
        // but the last.
        let b = rx.next_batch(5, 3, &mut stop).await.unwrap();
        assert_eq!(b.pairs.len(), 5);
        let c = q.counts();
        assert_eq!((c.accepted, c.expired, c.taken, c.depth), (12, 6, 5, 1));
        // A batch that the stop signal cuts short is not taken: its pair still waits.
        let taking = async { rx.next_batch(2, 3, &mut stop).await.is_none() };
        let stopping = async {
            tokio::task::yield_now().await;
            stop_tx.send(true).unwrap();
        };
        let (stopped, ()) = tokio::join!(taking, stopping);
        assert!(stopped);
        let c = q.counts();
        assert_eq!((c.taken, c.depth), (5, 1));
        assert!(balanced(c), "{c:?}");
    }

    #[tokio::test]
    async fn a_client_that_fills_the_queue_waits_for_its_share_behind_another() {
        let (q, mut rx) = Queue::new(4, 10);
        let q = Arc::new(q);
        let (_stop_tx, mut stop) = watch::channel(false);
        // Client 1 fills the queue, and pushes two more; client 2 then pushes two.
        q.push((0..4).map(|i| pair(i, 0)).collect(), 0, 0, 1)
            .await
            .unwrap();
        let push = |client: u64, prompts: [u32; 2]| {
            let q = q.clone();
            tokio::spawn(async move {
                let batch = prompts.iter().map(|&p| pair(p, 0)).collect();
                q.push(batch, 0, 0, client).await
            })
        };
        let more = push(1, [4, 5]);
        tokio::task::yield_now().await;
        let other = push(2, [20, 21]);
        tokio::task::yield_now().await;
        let b = rx.next_batch(4, 0, &mut stop).await.unwrap();
        assert_eq!(b.pairs.len(), 4);
        // Client 2 holds nothing: its pairs come first; client 1 holds the whole queue
        // and waits until it is down to its half.
        let b = rx.next_batch(2, 0, &mut stop).await.unwrap();
        let prompts: Vec<u32> = b.pairs.iter().map(|p| p.prompt[0]).collect();
        assert_eq!(prompts, [20, 21]);
        assert_eq!(other.await.unwrap(), Ok(2));
        let b = rx.next_batch(2, 0, &mut stop).await.unwrap();
        let prompts: Vec<u32> = b.pairs.iter().map(|p| p.prompt[0]).collect();
        assert_eq!(prompts, [4, 5]);
        assert_eq!(more.await.unwrap(), Ok(2));
        assert!(q.tally.held().is_empty());
    }

    #[tokio::test]
    async fn a_client_holds_at_most_its_share_while_another_has_pairs_waiting() {
        let (q, mut rx) = Queue::new(8, 10);
        let q = Arc::new(q);
        let (_stop_tx, mut stop) = watch::channel(false);
        q.push((0..4).map(|i| pair(i, 0)).collect(), 0, 0, 1)
            .await
            .unwrap();
        q.push(vec![pair(10, 0)], 0, 0, 2).await.unwrap();
        // Two clients have pairs waiting: client 1's share is 8 / 2 = 4, which it holds,
        // so its next batch waits although the queue has room for three more.
        let more = {
            let q = q.clone();
            tokio::spawn(async move { q.push(vec![pair(4, 0), pair(5, 0)], 0, 0, 1).await })
        };
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert!(!more.is_finished());
        // Client 2 may still add up to its share.
        assert_eq!(q.push(vec![pair(11, 0), pair(12, 0)], 0, 0, 2).await, Ok(2));
        // Once the trainer takes client 1's first four, its batch goes in.
        let b = rx.next_batch(4, 0, &mut stop).await.unwrap();
        let prompts: Vec<u32> = b.pairs.iter().map(|p| p.prompt[0]).collect();
        assert_eq!(prompts, [0, 1, 2, 3]);
        assert_eq!(more.await.unwrap(), Ok(2));
    }
}
