//! A client's link to the learner: one connection at a time (register, stream the
//! weights in, send the trajectory batches out and count their acknowledgements), kept
//! up with back-off until the run finishes, the learner refuses the client or the client
//! stops. Every trajectory sent is accounted for ([`Sent`]): the learner acknowledged
//! it queued or declined, or its batch went unacknowledged (lost with a connection).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use qd_proto::{PushAck, Role, TrajectoryBatch, WatchRequest};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use common::settings::ClientSettings;

use crate::broadcast::{Assembler, Weights, MAX_WEIGHT_BYTES};
use crate::client::{connect, is_fatal, Backoff, Credentials, Identity};
use crate::metrics as m;

/// Batches an actor may have made and not yet seen queued by the learner (made, waiting
/// or in flight). One keeps trajectories fresh: a new rollout starts only once the
/// learner has queued the last one, so a full learner queue pauses the actors instead of
/// letting their batches age.
pub const CREDITS: usize = 1;

/// What keeps a client connected and hands weights to its compute thread.
#[derive(Debug)]
pub struct Link {
    pub settings: ClientSettings,
    pub credentials: Credentials,
    pub identity: Identity,
    /// The newest verified weights (read by the compute thread between rollouts).
    pub weights: watch::Sender<Option<Arc<Weights>>>,
    /// Taken by the compute thread before each rollout, given back when the learner
    /// acknowledges (or the batch is lost): see [`CREDITS`].
    pub credits: Arc<tokio::sync::Semaphore>,
    /// Set when the learner has said the run finished (before the compute thread is
    /// told to stop): `weights` then holds the final version.
    pub finished: Arc<AtomicBool>,
    /// What this client sent, as the learner answered it.
    pub sent: Sent,
}

/// The trajectories a client sent: `trajectories = acknowledged + declined +
/// unacknowledged` once no batch is in flight.
#[derive(Debug, Default)]
pub struct Sent {
    pub trajectories: AtomicU64,
    /// Queued by the learner: the sum of its acknowledgements.
    pub acknowledged: AtomicU64,
    /// Acknowledged but not queued (too stale, or sent before).
    pub declined: AtomicU64,
    /// In batches the learner never acknowledged: lost with a connection, or in a batch
    /// it refused (which ends the stream).
    pub unacknowledged: AtomicU64,
}

impl Sent {
    /// `[trajectories, acknowledged, declined, unacknowledged]`.
    pub fn counts(&self) -> [u64; 4] {
        [
            &self.trajectories,
            &self.acknowledged,
            &self.declined,
            &self.unacknowledged,
        ]
        .map(|c| c.load(Ordering::SeqCst))
    }
}

/// The batches of one trajectory stream awaiting their acknowledgement, oldest first (the
/// learner answers in order): `(sequence, trajectories)`. What is left when the stream
/// ends is counted unacknowledged, and its credits given back.
struct InFlight<'a> {
    link: &'a Link,
    batches: VecDeque<(u64, u64)>,
}

impl InFlight<'_> {
    fn sent(&mut self, sequence: u64, n: u64) {
        self.batches.push_back((sequence, n));
        self.link.sent.trajectories.fetch_add(n, Ordering::SeqCst);
        ::metrics::counter!(m::TRAJECTORIES_SENT).increment(n);
        ::metrics::counter!(m::BATCHES_SENT).increment(1);
    }

    fn acknowledged(&mut self, ack: &PushAck) -> Result<(), Status> {
        let Some(&(sequence, n)) = self.batches.front() else {
            return Err(Status::internal(format!(
                "the learner acknowledged batch {} that was not sent",
                ack.sequence
            )));
        };
        let queued = u64::from(ack.accepted);
        if ack.sequence != sequence || queued > n {
            return Err(Status::internal(format!(
                "the learner acknowledged {queued} trajectories of batch {}, expected batch {sequence} of {n}",
                ack.sequence
            )));
        }
        self.batches.pop_front();
        let sent = &self.link.sent;
        sent.acknowledged.fetch_add(queued, Ordering::SeqCst);
        sent.declined.fetch_add(n - queued, Ordering::SeqCst);
        ::metrics::counter!(m::TRAJECTORIES_ACKNOWLEDGED).increment(queued);
        ::metrics::counter!(m::TRAJECTORIES_DECLINED).increment(n - queued);
        self.link.credits.add_permits(1);
        Ok(())
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let lost: u64 = self.batches.iter().map(|&(_, n)| n).sum();
        self.link
            .sent
            .unacknowledged
            .fetch_add(lost, Ordering::SeqCst);
        ::metrics::counter!(m::TRAJECTORIES_UNACKNOWLEDGED).increment(lost);
        self.link.credits.add_permits(self.batches.len());
    }
}

/// How long a client waits, once the run has finished, for the acknowledgements of the
/// batches it has in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps a connection to the learner until `stop` or the end of the run (then it sets
/// `link.finished`): registers, streams weights into `link.weights`, and (for actors)
/// sends `batches`; reconnects with back-off after any failure. Returns an error when
/// the learner refuses this client, or when no connection has succeeded for
/// `client.give_up_after_s` (so that a Job whose learner is gone for good fails).
pub async fn maintain(
    link: &Link,
    mut batches: Option<&mut mpsc::Receiver<TrajectoryBatch>>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut backoff = Backoff::new(&link.settings);
    let mut pending: Option<TrajectoryBatch> = None;
    loop {
        let ended = tokio::select! {
            r = session(link, batches.as_deref_mut(), &mut pending, &mut backoff) => r,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let ended = match ended {
            Ended::Finished { version } => {
                tracing::info!(version, "the learner has finished the run; stopping");
                link.finished.store(true, Ordering::SeqCst);
                return Ok(());
            }
            Ended::Lost(status) => status,
        };
        if is_fatal(&ended) {
            bail!("the learner refused this client: {}", ended.message());
        }
        if ended.code() == tonic::Code::Cancelled {
            return Ok(());
        }
        let give_up = link.settings.give_up_after_s;
        if give_up > 0 && backoff.without_learner().as_secs() >= give_up {
            bail!(
                "no learner for {} s (client.give_up_after_s = {give_up}): giving up; the last attempt: {}",
                backoff.without_learner().as_secs(),
                ended.message()
            );
        }
        ::metrics::counter!(m::Client::of(link.identity.role).reconnects).increment(1);
        let delay = backoff.next_delay();
        tracing::warn!(
            code = ?ended.code(),
            retry_in_ms = delay.as_millis() as u64,
            "connection to the learner lost: {}",
            ended.message()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

async fn next_ack(acks: &mut Option<Streaming<PushAck>>) -> Result<Option<PushAck>, Status> {
    match acks {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

async fn next_batch(
    b: &mut Option<&mut mpsc::Receiver<TrajectoryBatch>>,
) -> Option<TrajectoryBatch> {
    match b {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// How a connection ended.
enum Ended {
    /// The learner has finished the run; `version` is its final one.
    Finished { version: u64 },
    /// It failed (the status says why): connect again.
    Lost(Status),
}

/// One connection, until the run finishes or the connection fails.
async fn session(
    link: &Link,
    mut batches: Option<&mut mpsc::Receiver<TrajectoryBatch>>,
    pending: &mut Option<TrajectoryBatch>,
    backoff: &mut Backoff,
) -> Ended {
    // Batches sent but never acknowledged are lost with the connection (`InFlight`
    // counts them when it is dropped).
    let mut in_flight = InFlight {
        link,
        batches: VecDeque::new(),
    };
    match session_inner(link, &mut batches, pending, backoff, &mut in_flight).await {
        Ok(version) => Ended::Finished { version },
        Err(s) => Ended::Lost(s),
    }
}

/// One connection; `Ok(final version)` when the learner says the run has finished.
async fn session_inner(
    link: &Link,
    batches: &mut Option<&mut mpsc::Receiver<TrajectoryBatch>>,
    pending: &mut Option<TrajectoryBatch>,
    backoff: &mut Backoff,
    in_flight: &mut InFlight<'_>,
) -> Result<u64, Status> {
    let mut client = connect(&link.settings, &link.credentials).await?;
    let reg = link.identity.register(&mut client).await?;
    // An actor has nothing left to do; an evaluator fetches the final version first
    // (its weight stream sends it, then ends).
    if reg.finished && link.identity.role == Role::Actor {
        return Ok(reg.version);
    }
    let id = reg.actor_id;
    let have = link.weights.borrow().as_ref().map_or(0, |w| w.version);
    tracing::info!(
        id,
        learner_version = reg.version,
        learner_step = reg.step,
        have_version = have,
        "registered with the learner"
    );
    let watch_req = link
        .identity
        .tag(Request::new(WatchRequest { have_version: have }), id);
    let mut chunks = client.clone().watch_weights(watch_req).await?.into_inner();
    let (out_tx, out_rx) = mpsc::channel::<TrajectoryBatch>(CREDITS);
    let mut acks = match batches {
        Some(_) => {
            let req = link
                .identity
                .tag(Request::new(ReceiverStream::new(out_rx)), id);
            Some(client.push_trajectories(req).await?.into_inner())
        }
        None => None,
    };
    // Only a session whose streams the learner accepted resets the back-off: one refused
    // after Register (a full learner: limits.max_watchers, max_push_streams) keeps
    // backing off instead of registering again at once.
    backoff.reset();
    let mut known_version = reg.version;
    let mut assembler = Assembler::default();
    let mut sequence = 0u64;
    loop {
        if let Some(mut b) = pending.take() {
            if b.version > known_version {
                // Made with weights of a learner run that no longer exists (it restarted
                // from an earlier checkpoint): the learner would refuse it.
                ::metrics::counter!(m::BATCHES_DROPPED, "reason" => "version_ahead").increment(1);
                link.credits.add_permits(1);
            } else {
                let this = sequence;
                b.sequence = this;
                sequence += 1;
                let n = b.trajectories.len() as u64;
                out_tx
                    .send(b)
                    .await
                    .map_err(|_| Status::unavailable("trajectory stream closed"))?;
                in_flight.sent(this, n);
            }
        }
        tokio::select! {
            c = chunks.message() => {
                let Some(c) = c? else {
                    // A clean end: the run finished (the stream ends after the final
                    // version), which the learner confirms.
                    let status = link.identity.tag(Request::new(qd_proto::StatusRequest {}), id);
                    let s = client.status(status).await?.into_inner();
                    if s.finished {
                        drop(out_tx);
                        drain(&mut acks, in_flight).await;
                        return Ok(s.version);
                    }
                    return Err(Status::unavailable("the learner ended the weight stream"));
                };
                known_version = known_version.max(c.version);
                // No more than the architecture's parameters can take, whatever size
                // the learner announces.
                let most = link.identity.model_config.max_blob_bytes().min(MAX_WEIGHT_BYTES);
                if let Some(w) = assembler.push(c, most)? {
                    link.weights.send_replace(Some(Arc::new(w)));
                }
            }
            a = next_ack(&mut acks) => {
                let a = a?.ok_or_else(|| Status::unavailable("the learner ended the trajectory stream"))?;
                in_flight.acknowledged(&a)?;
                known_version = known_version.max(a.learner_version);
                ::metrics::gauge!(m::LEARNER_QUEUE_DEPTH).set(f64::from(a.queue_depth));
            }
            b = next_batch(batches) => {
                *pending = Some(b.ok_or_else(|| Status::cancelled("rollouts ended"))?);
            }
        }
    }
}

/// The run has finished: reads the acknowledgements of the batches still in flight (the
/// outbound stream is closed, so the learner ends the stream after them), for at most
/// [`DRAIN_TIMEOUT`]; what is left counts as unacknowledged.
async fn drain(acks: &mut Option<Streaming<PushAck>>, in_flight: &mut InFlight<'_>) {
    let reading = async {
        while !in_flight.batches.is_empty() {
            match next_ack(acks).await {
                Ok(Some(a)) => {
                    if in_flight.acknowledged(&a).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, reading).await;
}
