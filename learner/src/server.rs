//! The `Learner` gRPC service: registration with the compatibility check, trajectory
//! intake (`crate::intake`: validation, then [`crate::queue`]), weight subscriptions (the streaming
//! itself is [`crate::broadcast`]), status, and the per-client stream limits. The
//! transport, the bearer-token check and memory release are [`crate::transport`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use qd_proto::learner_server::{Learner, LearnerServer};
use qd_proto::{
    PushAck, RegisterRequest, RegisterResponse, Role, StatusRequest, StatusResponse,
    TrajectoryBatch, WatchRequest, WeightChunk,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use common::settings::LimitSettings;
use model::config::ModelConfig;

use crate::broadcast::{self, Publisher};
use crate::metrics as m;
use crate::queue::Queue;
use crate::validate::Rules;

/// The service's state: the rules and limits it applies, the intake's end of the queue,
/// what the trainer published, and the clients and streams it issued.
#[derive(Debug)]
pub struct Shared {
    pub rules: Rules,
    pub model_config: ModelConfig,
    pub vocab_hash: String,
    pub chunk_bytes: usize,
    /// The largest message the learner sends (weight chunks).
    pub max_send_bytes: usize,
    /// The largest it accepts: the largest honest batch ([`Rules::max_batch_bytes`]),
    /// at least a `Register`.
    pub max_request_bytes: usize,
    pub max_steps: u64,
    pub queue: Queue,
    pub publisher: Arc<Publisher>,
    pub limits: LimitSettings,
    /// The client ids `Register` issued, and to which address.
    issued: Mutex<Issued>,
    next_stream: AtomicU64,
    streams: Mutex<Streams>,
    /// Set when a stream ends: the memory its buffers held can go back to the system
    /// (`crate::transport::release_memory`).
    pub streams_closed: Arc<AtomicBool>,
}

/// The open streams, by what the learner issued.
#[derive(Debug, Default)]
struct Streams {
    /// Open `WatchWeights` streams by stream number: (client id, role, name).
    watchers: HashMap<u64, (u64, Role, String)>,
    /// Open `PushTrajectories` streams per client id.
    pushers: HashMap<u64, usize>,
}

/// Client ids remembered: a client registered longer ago than this many registrations
/// must register again (its calls are refused with PERMISSION_DENIED, which clients
/// answer by reconnecting).
pub const ISSUED_IDS: usize = 65_536;

/// The client ids `Register` issued: random, so that none can be guessed, and bound to
/// the IP address that registered, so that one seen elsewhere is refused.
#[derive(Debug, Default)]
struct Issued {
    to: HashMap<u64, Option<IpAddr>>,
    order: std::collections::VecDeque<u64>,
}

impl Issued {
    fn issue(&mut self, addr: Option<IpAddr>) -> u64 {
        let id = loop {
            // 63 bits, never 0.
            let id = rand::random::<u64>() >> 1;
            if id != 0 && !self.to.contains_key(&id) {
                break id;
            }
        };
        self.to.insert(id, addr);
        self.order.push_back(id);
        if self.order.len() > ISSUED_IDS {
            if let Some(old) = self.order.pop_front() {
                self.to.remove(&old);
            }
        }
        id
    }
}

/// Bytes of a client's string echoed back or logged; the rest is cut.
const ECHO_BYTES: usize = 64;

/// `s` as a client's string may be echoed or logged: control characters escaped (a
/// newline in a client's name cannot forge a line of the learner's log), cut to
/// [`ECHO_BYTES`] at a character boundary and marked when cut.
pub fn clip(s: &str) -> String {
    let len = s.len();
    let s: String = if s.chars().any(char::is_control) {
        s.chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect()
    } else {
        s.to_string()
    };
    if s.len() <= ECHO_BYTES {
        return s;
    }
    let mut end = ECHO_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({len} bytes)", &s[..end])
}

/// Longest `Register` fields accepted: names and hashes, and the model config's JSON.
const MAX_NAME_BYTES: usize = 256;
const MAX_HASH_BYTES: usize = 128;
const MAX_CONFIG_JSON_BYTES: usize = 16 << 10;

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rules: Rules,
        model_config: ModelConfig,
        vocab_hash: String,
        chunk_bytes: usize,
        max_send_bytes: usize,
        max_steps: u64,
        limits: LimitSettings,
        queue: Queue,
        publisher: Arc<Publisher>,
    ) -> Shared {
        let max_request_bytes = rules
            .max_batch_bytes()
            .max(qd_proto::codec::MAX_REGISTER_BYTES);
        Shared {
            rules,
            model_config,
            vocab_hash,
            chunk_bytes,
            max_send_bytes,
            max_request_bytes,
            max_steps,
            queue,
            publisher,
            limits,
            issued: Mutex::new(Issued::default()),
            next_stream: AtomicU64::new(1),
            streams: Mutex::new(Streams::default()),
            streams_closed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client id a call carries in `qd-actor-id`, if `Register` issued it to the
    /// address the call comes from.
    fn issued_id<T>(&self, req: &Request<T>) -> Result<u64, Status> {
        let raw = req
            .metadata()
            .get("qd-actor-id")
            .and_then(|v| v.to_str().ok());
        let from = req.remote_addr().map(|a| a.ip());
        let issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        raw.and_then(|v| v.parse::<u64>().ok())
            .filter(|id| issued.to.get(id) == Some(&from))
            .ok_or_else(|| {
                refused("unregistered");
                Status::permission_denied(format!(
                    "qd-actor-id {} was not issued by this learner to this address: call Register first",
                    clip(raw.unwrap_or("(missing)"))
                ))
            })
    }

    /// Open weight streams: (actors, evaluators).
    pub fn connected(&self) -> (usize, usize) {
        let s = self.streams();
        let actors = s
            .watchers
            .values()
            .filter(|(_, r, _)| *r == Role::Actor)
            .count();
        (actors, s.watchers.len() - actors)
    }

    fn set_connected_gauges(&self) {
        let (actors, evaluators) = self.connected();
        metrics::gauge!(m::CLIENTS_CONNECTED, "role" => "actor").set(actors as f64);
        metrics::gauge!(m::CLIENTS_CONNECTED, "role" => "evaluator").set(evaluators as f64);
    }
}

/// Counts a call or a connection refused by a limit or a rule of the stream plane.
pub(crate) fn refused(reason: &'static str) {
    debug_assert!(m::STREAM_REFUSALS.contains(&reason), "{reason}");
    metrics::counter!(m::STREAMS_REFUSED, "reason" => reason).increment(1);
}

/// Removes a weight stream when it ends, however it ends.
#[derive(Debug)]
pub struct WatchGuard {
    shared: Arc<Shared>,
    stream: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let gone = self.shared.streams().watchers.remove(&self.stream);
        self.shared.streams_closed.store(true, Ordering::Relaxed);
        if let Some((id, role, name)) = gone {
            tracing::info!(id, name, role = ?role, "client disconnected");
        }
        self.shared.set_connected_gauges();
    }
}

/// Releases a trajectory stream's slot when it ends.
#[derive(Debug)]
struct PushGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        self.shared.streams_closed.store(true, Ordering::Relaxed);
        let mut s = self.shared.streams();
        if let Some(n) = s.pushers.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                s.pushers.remove(&self.id);
            }
        }
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Service {
    pub shared: Arc<Shared>,
}

impl Service {
    /// The gRPC server of the service, with its message limits: what a client sends is
    /// bounded by the batch shape (on the wire here, decoded in `qd_proto::codec`), what
    /// the learner sends by `learner.max_message_bytes`.
    pub fn server(shared: Arc<Shared>) -> LearnerServer<Service> {
        let (request, send) = (shared.max_request_bytes, shared.max_send_bytes);
        LearnerServer::new(Service { shared })
            .max_decoding_message_size(request)
            .max_encoding_message_size(send)
    }
}

fn client_name<T>(req: &Request<T>) -> String {
    clip(
        req.metadata()
            .get("qd-client-name")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    )
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Learner for Service {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let from = req.remote_addr().map(|a| a.ip());
        let r = req.into_inner();
        let s = &self.shared;
        for (field, len, max) in [
            ("name", r.name.len(), MAX_NAME_BYTES),
            ("vocab_hash", r.vocab_hash.len(), MAX_HASH_BYTES),
            (
                "model_config_hash",
                r.model_config_hash.len(),
                MAX_HASH_BYTES,
            ),
            (
                "model_config_json",
                r.model_config_json.len(),
                MAX_CONFIG_JSON_BYTES,
            ),
        ] {
            if len > max {
                metrics::counter!(m::REFUSED, "reason" => "oversize").increment(1);
                tracing::warn!(field, len, "refused a registration with an oversize field");
                return Err(Status::invalid_argument(format!(
                    "Register.{field} holds {len} bytes, at most {max} are accepted"
                )));
            }
        }
        let name = clip(&r.name);
        // How it differs, each with the refusal's reason.
        let mut differs: Vec<(&'static str, String)> = Vec::new();
        if r.protocol_version != qd_proto::PROTOCOL_VERSION {
            differs.push((
                "protocol",
                format!(
                    "protocol version {} (learner speaks {})",
                    r.protocol_version,
                    qd_proto::PROTOCOL_VERSION
                ),
            ));
        }
        if r.model_config_hash != s.model_config.hash() {
            let fields = serde_json::from_str::<ModelConfig>(&r.model_config_json)
                .map(|c| c.diff(&s.model_config).join(", "))
                .unwrap_or_else(|_| "unreadable config".into());
            differs.push((
                "model_config",
                format!("model architecture: {fields} (client vs learner)"),
            ));
        }
        if r.vocab_hash != s.vocab_hash {
            differs.push((
                "vocabulary",
                format!(
                    "vocabulary {} (learner {}): prepare the same dataset",
                    clip(&r.vocab_hash),
                    s.vocab_hash
                ),
            ));
        }
        let role = Role::try_from(r.role).unwrap_or(Role::Unspecified);
        if role == Role::Unspecified {
            differs.push(("role", "role unspecified".into()));
        }
        if let Some(&(reason, _)) = differs.first() {
            let how: Vec<&str> = differs.iter().map(|(_, d)| d.as_str()).collect();
            metrics::counter!(m::REFUSED, "reason" => reason).increment(1);
            tracing::warn!(name, reason, "refused a client: {}", how.join("; "));
            return Err(Status::failed_precondition(format!(
                "incompatible with this learner: {}",
                how.join("; ")
            )));
        }
        let id = s
            .issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .issue(from);
        tracing::info!(id, name, role = ?role, "client registered");
        Ok(Response::new(RegisterResponse {
            actor_id: id,
            version: s.publisher.version(),
            step: s.publisher.step(),
            max_message_bytes: s.max_request_bytes as u64,
            samples_per_prompt: s.rules.samples_per_prompt as u32,
            finished: s.publisher.is_finished(),
        }))
    }

    type PushTrajectoriesStream = BoxStream<PushAck>;

    async fn push_trajectories(
        &self,
        req: Request<Streaming<TrajectoryBatch>>,
    ) -> Result<Response<Self::PushTrajectoriesStream>, Status> {
        let shared = self.shared.clone();
        let actor_id = shared.issued_id(&req)?;
        let guard = {
            let mut st = shared.streams();
            let lim = &shared.limits;
            let total: usize = st.pushers.values().sum();
            if total >= lim.max_push_streams {
                refused("push_limit");
                return Err(Status::resource_exhausted(format!(
                    "the learner holds {total} trajectory streams, its limit (limits.max_push_streams)"
                )));
            }
            let mine = st.pushers.entry(actor_id).or_insert(0);
            if *mine >= lim.max_push_streams_per_client {
                refused("client_push_limit");
                return Err(Status::resource_exhausted(format!(
                    "client {actor_id} already has {mine} trajectory streams open (limits.max_push_streams_per_client)"
                )));
            }
            *mine += 1;
            PushGuard {
                shared: shared.clone(),
                id: actor_id,
            }
        };
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(status) = crate::intake::intake(&shared, actor_id, inbound, &tx).await {
                // The end status, if there is room: a client that reads nothing is not
                // waited for.
                let _ = tx.try_send(Err(status));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchWeightsStream = BoxStream<WeightChunk>;

    async fn watch_weights(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchWeightsStream>, Status> {
        let shared = self.shared.clone();
        let id = shared.issued_id(&req)?;
        let name = client_name(&req);
        let role = match req.metadata().get("qd-role").and_then(|v| v.to_str().ok()) {
            Some("evaluator") => Role::Evaluator,
            _ => Role::Actor,
        };
        let have = req.into_inner().have_version;
        let stream = shared.next_stream.fetch_add(1, Ordering::SeqCst);
        {
            let mut st = shared.streams();
            if st.watchers.len() >= shared.limits.max_watchers {
                refused("watcher_limit");
                return Err(Status::resource_exhausted(format!(
                    "the learner holds {} weight streams, its limit (limits.max_watchers)",
                    st.watchers.len()
                )));
            }
            let mine = st.watchers.values().filter(|(c, _, _)| *c == id).count();
            if mine >= shared.limits.max_watchers_per_client {
                refused("client_watch_limit");
                return Err(Status::resource_exhausted(format!(
                    "client {id} already has {mine} weight streams open (limits.max_watchers_per_client)"
                )));
            }
            st.watchers.insert(stream, (id, role, name));
        }
        shared.set_connected_gauges();
        let guard = WatchGuard {
            shared: shared.clone(),
            stream,
        };
        let (published, endings) = shared.publisher.subscribe();
        let send_timeout = std::time::Duration::from_secs(shared.limits.request_timeout_s);
        let rx = broadcast::stream(
            published,
            endings,
            have,
            shared.chunk_bytes,
            send_timeout,
            guard,
        );
        Ok(Response::new(Box::pin(rx)))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = &self.shared;
        let (actors, _) = s.connected();
        let q = s.queue.counts();
        Ok(Response::new(StatusResponse {
            step: s.publisher.step(),
            version: s.publisher.version(),
            queue_depth: q.depth as u32,
            actors_connected: actors as u32,
            trajectories_accepted: q.accepted,
            trajectories_rejected: q.rejected,
            trajectories_stale: q.stale,
            trajectories_expired: q.expired,
            trajectories_taken: q.taken,
            max_steps: s.max_steps,
            model_config_hash: s.model_config.hash(),
            vocab_hash: s.vocab_hash.clone(),
            finished: s.publisher.is_finished(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_random_bound_to_an_address_and_remembered_within_a_bound() {
        let mut issued = Issued::default();
        let here: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let ids: Vec<u64> = (0..1000).map(|_| issued.issue(here)).collect();
        // Not a sequence: no two consecutive, none 0, all distinct.
        assert!(ids.iter().all(|&id| id != 0 && id <= i64::MAX as u64));
        assert!(ids.windows(2).all(|w| w[1] != w[0] + 1));
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert_eq!(issued.to[&ids[0]], here);
        // The oldest are forgotten beyond the bound.
        for _ in 0..ISSUED_IDS {
            issued.issue(None);
        }
        assert_eq!(issued.to.len(), ISSUED_IDS);
        assert!(!issued.to.contains_key(&ids[999]));
    }

    #[test]
    fn echoed_strings_are_escaped_and_cut() {
        // A newline cannot start a forged log line; other control characters show too.
        assert_eq!(clip("abc\nERROR forged"), "abc\\nERROR forged");
        assert_eq!(clip("a\u{1b}[31mb\tc"), "a\\u{1b}[31mb\\tc");
        assert_eq!(clip("plain name-1"), "plain name-1");
        // Cut at a character boundary, with the length the client sent.
        let long = "é".repeat(100);
        let c = clip(&long);
        assert!(c.ends_with("… (200 bytes)"), "{c}");
        assert!(c.len() <= ECHO_BYTES + "… (200 bytes)".len());
        assert!(!clip(&format!("{}\n", "x".repeat(100))).contains('\n'));
    }
}
