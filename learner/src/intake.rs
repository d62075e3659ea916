//! Trajectory intake: one `PushTrajectories` stream read into the queue — each batch
//! validated whole, its pairs queued (waiting while the queue is full), one
//! acknowledgement per batch — and the status a stream ends with when a message cannot
//! be read.

use std::time::Duration;

use qd_proto::{PushAck, TrajectoryBatch};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Code, Status, Streaming};

use crate::metrics as m;
use crate::queue::Pair;
use crate::server::{refused, Shared};
use crate::validate::validate;

/// Reads one trajectory stream into the queue until it ends; the error is the status the
/// stream ends with.
pub(crate) async fn intake(
    shared: &Shared,
    actor_id: u64,
    mut inbound: Streaming<TrajectoryBatch>,
    tx: &mpsc::Sender<Result<PushAck, Status>>,
) -> Result<(), Status> {
    let idle = Duration::from_secs(shared.limits.idle_push_timeout_s);
    let mut last_sequence = None;
    loop {
        let msg = match tokio::time::timeout(idle, inbound.next()).await {
            Err(_) => {
                refused("idle");
                return Err(Status::deadline_exceeded(format!(
                    "no batch for {} s (limits.idle_push_timeout_s)",
                    idle.as_secs()
                )));
            }
            Ok(None) => return Ok(()),
            Ok(Some(m)) => m,
        };
        let batch = match msg {
            Ok(b) => b,
            Err(status) => return Err(undecodable(actor_id, status)),
        };
        let current = shared.publisher.version();
        if let Err(r) = validate(&batch, &shared.rules, current, last_sequence) {
            shared
                .queue
                .rejected(batch.trajectories.len().max(1) as u64, r.reason);
            tracing::warn!(
                actor_id,
                reason = r.reason,
                "rejected a batch: {}",
                r.message
            );
            return Err(Status::invalid_argument(r.message));
        }
        last_sequence = Some(batch.sequence);
        let pairs: Vec<Pair> = batch
            .trajectories
            .into_iter()
            .map(|t| Pair {
                prompt: t.prompt,
                samples: t
                    .samples
                    .into_iter()
                    .map(|s| (s.tokens, s.logprobs))
                    .collect(),
                reward: t.reward,
                version: batch.version,
            })
            .collect();
        // Waits while the queue is full: back-pressure to this stream only.
        let accepted = shared
            .queue
            .push(pairs, batch.version, current, actor_id)
            .await
            .map_err(|_| Status::unavailable("the learner is shutting down"))?
            as u32;
        let ack = PushAck {
            sequence: batch.sequence,
            accepted,
            queue_depth: shared.queue.counts().depth as u32,
            learner_version: shared.publisher.version(),
        };
        if tx.send(Ok(ack)).await.is_err() {
            return Ok(());
        }
    }
}

/// The status a trajectory stream ends with when a message cannot be read: a message
/// over the size limit (OUT_OF_RANGE), one that would decode too large
/// (RESOURCE_EXHAUSTED) or one that does not decode (INVALID_ARGUMENT) is the client's
/// fault and said so (and counted); a connection that went away ends the stream quietly.
fn undecodable(actor_id: u64, status: Status) -> Status {
    let reason = match status.code() {
        Code::OutOfRange | Code::ResourceExhausted => "oversize",
        Code::Internal => "malformed",
        _ => {
            tracing::debug!(actor_id, %status, "trajectory stream ended");
            return status;
        }
    };
    metrics::counter!(m::DROPPED, "reason" => reason).increment(1);
    tracing::warn!(
        actor_id,
        reason,
        "refused an unreadable message: {}",
        status.message()
    );
    match status.code() {
        Code::Internal => {
            Status::invalid_argument(format!("unreadable TrajectoryBatch: {}", status.message()))
        }
        code => Status::new(
            code,
            format!("refused a TrajectoryBatch: {}", status.message()),
        ),
    }
}
