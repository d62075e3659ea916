//! The `Learner` gRPC service: registration with the compatibility check, trajectory
//! intake into the bounded queue (back-pressure, validation), weight subscriptions (the
//! streaming itself is [`crate::broadcast`]), status, and the bearer-token check.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use qd_proto::learner_server::Learner;
use qd_proto::{
    PushAck, RegisterRequest, RegisterResponse, Role, StatusRequest, StatusResponse,
    TrajectoryBatch, WatchRequest, WeightChunk,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use model::config::ModelConfig;

use crate::broadcast::{self, Published};
use crate::loss::Pair;
use crate::metrics as m;
use crate::validate::{validate, Rules};

/// A validated trajectory waiting for the trainer.
#[derive(Debug)]
pub struct Queued {
    pub pair: Pair,
    pub actor_id: u64,
}

/// State shared by the service and the trainer.
#[derive(Debug)]
pub struct Shared {
    pub rules: Rules,
    pub model_config: ModelConfig,
    pub vocab_hash: String,
    pub chunk_bytes: usize,
    pub max_message_bytes: usize,
    pub max_steps: u64,
    pub step: AtomicU64,
    pub version: AtomicU64,
    pub queue: mpsc::Sender<Queued>,
    pub queue_depth: AtomicUsize,
    pub published: watch::Sender<Option<Arc<Published>>>,
    /// Set when the learner shuts down: open weight streams end.
    pub closing: watch::Sender<bool>,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub stale: AtomicU64,
    next_id: AtomicU64,
    /// Clients with an open WatchWeights stream, by id: (role, name).
    watchers: Mutex<HashMap<u64, (Role, String)>>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rules: Rules,
        model_config: ModelConfig,
        vocab_hash: String,
        chunk_bytes: usize,
        max_message_bytes: usize,
        max_steps: u64,
        queue: mpsc::Sender<Queued>,
    ) -> Shared {
        Shared {
            rules,
            model_config,
            vocab_hash,
            chunk_bytes,
            max_message_bytes,
            max_steps,
            step: AtomicU64::new(0),
            version: AtomicU64::new(0),
            queue,
            queue_depth: AtomicUsize::new(0),
            published: watch::channel(None).0,
            closing: watch::channel(false).0,
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            watchers: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `p` the version every subscriber streams next.
    pub fn publish(&self, p: Published) {
        self.version.store(p.version, Ordering::SeqCst);
        metrics::gauge!(m::VERSION).set(p.version as f64);
        metrics::gauge!(m::PUBLISH_BYTES).set(p.blob.len() as f64);
        self.published.send_replace(Some(Arc::new(p)));
    }

    fn connected(&self) -> (usize, usize) {
        let w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        let actors = w.values().filter(|(r, _)| *r == Role::Actor).count();
        (actors, w.len() - actors)
    }

    fn set_connected_gauges(&self) {
        let (actors, evaluators) = self.connected();
        metrics::gauge!(m::ACTORS_CONNECTED, "role" => "actor").set(actors as f64);
        metrics::gauge!(m::ACTORS_CONNECTED, "role" => "evaluator").set(evaluators as f64);
    }
}

/// Removes a watcher when its stream ends, however it ends.
#[derive(Debug)]
pub struct WatchGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let name = self
            .shared
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        if let Some((role, name)) = name {
            tracing::info!(id = self.id, name, role = ?role, "client disconnected");
        }
        self.shared.set_connected_gauges();
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Service {
    pub shared: Arc<Shared>,
}

fn client_id<T>(req: &Request<T>) -> u64 {
    req.metadata()
        .get("qd-actor-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn client_name<T>(req: &Request<T>) -> String {
    req.metadata()
        .get("qd-client-name")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Learner for Service {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let r = req.into_inner();
        let s = &self.shared;
        let mut differs = Vec::new();
        if r.protocol_version != qd_proto::PROTOCOL_VERSION {
            differs.push(format!(
                "protocol version {} (learner speaks {})",
                r.protocol_version,
                qd_proto::PROTOCOL_VERSION
            ));
        }
        if r.model_config_hash != s.model_config.hash() {
            let fields = serde_json::from_str::<ModelConfig>(&r.model_config_json)
                .map(|c| c.diff(&s.model_config).join(", "))
                .unwrap_or_else(|_| "unreadable config".into());
            differs.push(format!("model architecture: {fields} (client vs learner)"));
        }
        if r.vocab_hash != s.vocab_hash {
            differs.push(format!(
                "vocabulary {} (learner {}): prepare the same dataset",
                r.vocab_hash, s.vocab_hash
            ));
        }
        let role = Role::try_from(r.role).unwrap_or(Role::Unspecified);
        if role == Role::Unspecified {
            differs.push("role unspecified".into());
        }
        if !differs.is_empty() {
            metrics::counter!(m::REFUSED).increment(1);
            tracing::warn!(name = r.name, "refused a client: {}", differs.join("; "));
            return Err(Status::failed_precondition(format!(
                "incompatible with this learner: {}",
                differs.join("; ")
            )));
        }
        let id = s.next_id.fetch_add(1, Ordering::SeqCst);
        tracing::info!(id, name = r.name, role = ?role, "client registered");
        Ok(Response::new(RegisterResponse {
            actor_id: id,
            version: s.version.load(Ordering::SeqCst),
            step: s.step.load(Ordering::SeqCst),
            max_message_bytes: s.max_message_bytes as u64,
            samples_per_prompt: s.rules.samples_per_prompt as u32,
        }))
    }

    type PushTrajectoriesStream = BoxStream<PushAck>;

    async fn push_trajectories(
        &self,
        req: Request<Streaming<TrajectoryBatch>>,
    ) -> Result<Response<Self::PushTrajectoriesStream>, Status> {
        let actor_id = client_id(&req);
        let mut inbound = req.into_inner();
        let shared = self.shared.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut last_sequence = None;
            while let Some(msg) = inbound.next().await {
                let batch = match msg {
                    Ok(b) => b,
                    Err(status) => {
                        tracing::debug!(actor_id, %status, "trajectory stream ended");
                        break;
                    }
                };
                let current = shared.version.load(Ordering::SeqCst);
                if let Err(r) = validate(&batch, &shared.rules, current, last_sequence) {
                    let n = batch.trajectories.len().max(1) as u64;
                    shared.rejected.fetch_add(n, Ordering::SeqCst);
                    metrics::counter!(m::DROPPED, "reason" => r.reason).increment(n);
                    tracing::warn!(
                        actor_id,
                        reason = r.reason,
                        "rejected a batch: {}",
                        r.message
                    );
                    let _ = tx.send(Err(Status::invalid_argument(r.message))).await;
                    return;
                }
                last_sequence = Some(batch.sequence);
                let n = batch.trajectories.len();
                for t in batch.trajectories {
                    let pair = Pair {
                        prompt: t.prompt,
                        samples: t
                            .samples
                            .into_iter()
                            .map(|s| (s.tokens, s.logprobs))
                            .collect(),
                        reward: t.reward,
                        version: batch.version,
                    };
                    // Waits while the queue is full: back-pressure to this stream only.
                    if shared.queue.send(Queued { pair, actor_id }).await.is_err() {
                        let _ = tx
                            .send(Err(Status::unavailable("the learner is shutting down")))
                            .await;
                        return;
                    }
                    let depth = shared.queue_depth.fetch_add(1, Ordering::SeqCst) + 1;
                    metrics::gauge!(m::QUEUE_DEPTH).set(depth as f64);
                }
                shared.accepted.fetch_add(n as u64, Ordering::SeqCst);
                metrics::counter!(m::ACCEPTED).increment(n as u64);
                let ack = PushAck {
                    sequence: batch.sequence,
                    accepted: n as u32,
                    queue_depth: shared.queue_depth.load(Ordering::SeqCst) as u32,
                    learner_version: shared.version.load(Ordering::SeqCst),
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchWeightsStream = BoxStream<WeightChunk>;

    async fn watch_weights(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchWeightsStream>, Status> {
        let id = client_id(&req);
        let name = client_name(&req);
        let role = match req.metadata().get("qd-role").and_then(|v| v.to_str().ok()) {
            Some("evaluator") => Role::Evaluator,
            _ => Role::Actor,
        };
        let have = req.into_inner().have_version;
        let shared = self.shared.clone();
        shared
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (role, name));
        shared.set_connected_gauges();
        let guard = WatchGuard {
            shared: shared.clone(),
            id,
        };
        let published = shared.published.subscribe();
        let closing = shared.closing.subscribe();
        let rx = broadcast::stream(published, closing, have, shared.chunk_bytes, guard);
        Ok(Response::new(Box::pin(rx)))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = &self.shared;
        let (actors, _) = s.connected();
        Ok(Response::new(StatusResponse {
            step: s.step.load(Ordering::SeqCst),
            version: s.version.load(Ordering::SeqCst),
            queue_depth: s.queue_depth.load(Ordering::SeqCst) as u32,
            actors_connected: actors as u32,
            trajectories_accepted: s.accepted.load(Ordering::SeqCst),
            trajectories_rejected: s.rejected.load(Ordering::SeqCst),
            trajectories_stale: s.stale.load(Ordering::SeqCst),
            max_steps: s.max_steps,
            model_config_hash: s.model_config.hash(),
            vocab_hash: s.vocab_hash.clone(),
        }))
    }
}

/// The gRPC server with qd's transport settings (HTTP/2 windows that let a weight chunk
/// through at once).
pub fn transport() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(qd_proto::STREAM_WINDOW)
        .initial_connection_window_size(qd_proto::CONNECTION_WINDOW)
}

/// Refuses calls without `authorization: Bearer <token>` when a token is configured.
#[derive(Clone, Debug)]
pub struct Auth {
    pub token: Option<Arc<str>>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(req)
        } else {
            metrics::counter!(m::UNAUTHENTICATED).increment(1);
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
