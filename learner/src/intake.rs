//! Trajectory intake: one `PushTrajectories` stream read into the queue — each batch
//! validated whole, its pairs queued (waiting while the queue is full), one
//! acknowledgement per batch, which the client must read within
//! `limits.request_timeout_s` — and the status a stream ends with when a message cannot
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
    let unread = Duration::from_secs(shared.limits.request_timeout_s);
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
        if !acknowledge(tx, ack, unread).await? {
            return Ok(());
        }
    }
}

/// Sends one acknowledgement, waiting at most `wait` for room (a client that does not
/// read its acknowledgements would otherwise hold its intake, and the batch it sends
/// next, forever); false when the client is gone.
pub(crate) async fn acknowledge(
    tx: &mpsc::Sender<Result<PushAck, Status>>,
    ack: PushAck,
    wait: Duration,
) -> Result<bool, Status> {
    match tokio::time::timeout(wait, tx.send(Ok(ack))).await {
        Ok(sent) => Ok(sent.is_ok()),
        Err(_) => {
            refused("unread_acks");
            Err(Status::deadline_exceeded(format!(
                "acknowledgements unread for {} s (limits.request_timeout_s)",
                wait.as_secs()
            )))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_its_acknowledgements_is_ended() {
        let (tx, mut rx) = mpsc::channel(1);
        let wait = Duration::from_secs(30);
        let ack = |sequence| PushAck {
            sequence,
            ..Default::default()
        };
        assert!(acknowledge(&tx, ack(0), wait).await.unwrap());
        // The first is unread: the second waits `wait`, then the stream ends.
        let t0 = tokio::time::Instant::now();
        let e = acknowledge(&tx, ack(1), wait).await.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded);
        assert!(e.message().contains("limits.request_timeout_s"), "{e}");
        assert_eq!(t0.elapsed(), wait);
        // Read, there is room again; a client gone is no error.
        assert_eq!(rx.recv().await.unwrap().unwrap().sequence, 0);
        assert!(acknowledge(&tx, ack(2), wait).await.unwrap());
        drop(rx);
        assert!(!acknowledge(&tx, ack(3), wait).await.unwrap());
    }
}
