//! The actor's and the evaluator's side of the protocol's calls: connecting (TLS, the
//! bearer token), registering with the client's identity, which refusals are final, and
//! the reconnection back-off. Weight chunks are reassembled in [`crate::broadcast`]; the
//! connection is kept up in [`crate::link`].

use std::time::Duration;

use anyhow::{bail, Context, Result};
use qd_proto::learner_client::LearnerClient;
use qd_proto::{RegisterRequest, RegisterResponse, Role};
use rand::Rng;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use common::settings::{AuthSettings, ClientSettings};
use model::config::ModelConfig;

/// Adds `authorization: Bearer <token>` to every call when a token is configured.
#[derive(Clone, Debug)]
pub struct BearerToken(pub Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    pub fn new(token: &str) -> Result<BearerToken> {
        if token.is_empty() {
            return Ok(BearerToken(None));
        }
        match format!("Bearer {token}").parse() {
            Ok(v) => Ok(BearerToken(Some(v))),
            Err(_) => bail!("auth.token must be printable ASCII"),
        }
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Client = LearnerClient<InterceptedService<Channel, BearerToken>>;

/// What a client proves itself and the learner with.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub token: BearerToken,
    pub tls: Option<ClientTlsConfig>,
}

impl Credentials {
    /// From the `auth` settings; reads the CA file when one is named.
    pub fn new(auth: &AuthSettings) -> Result<Credentials> {
        let tls = if auth.tls_ca.is_empty() {
            None
        } else {
            let ca = std::fs::read(&auth.tls_ca)
                .with_context(|| format!("auth.tls_ca: reading {}", auth.tls_ca))?;
            let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if !auth.tls_domain.is_empty() {
                c = c.domain_name(auth.tls_domain.clone());
            }
            if !auth.tls_client_cert.is_empty() {
                let read = |key: &str, path: &str| {
                    std::fs::read(path).with_context(|| format!("{key}: reading {path}"))
                };
                c = c.identity(tonic::transport::Identity::from_pem(
                    read("auth.tls_client_cert", &auth.tls_client_cert)?,
                    read("auth.tls_client_key", &auth.tls_client_key)?,
                ));
            }
            Some(c)
        };
        Ok(Credentials {
            token: BearerToken::new(&auth.token)?,
            tls,
        })
    }
}

/// Connects to the learner (one attempt).
pub async fn connect(s: &ClientSettings, creds: &Credentials) -> Result<Client, Status> {
    let mut endpoint = Endpoint::from_shared(s.learner.clone())
        .map_err(|e| Status::invalid_argument(format!("client.learner {:?}: {e}", s.learner)))?
        .connect_timeout(Duration::from_millis(s.connect_timeout_ms))
        .http2_keep_alive_interval(Duration::from_secs(s.keepalive_s))
        .keep_alive_timeout(Duration::from_secs(2 * s.keepalive_s))
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(Duration::from_secs(s.keepalive_s)))
        .initial_stream_window_size(qd_proto::STREAM_WINDOW)
        .initial_connection_window_size(qd_proto::CONNECTION_WINDOW)
        .max_frame_size(qd_proto::CLIENT_MAX_FRAME)
        .tcp_nodelay(true);
    if let Some(tls) = &creds.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| Status::invalid_argument(format!("TLS settings: {e}")))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("connecting to {}: {e}", s.learner)))?;
    Ok(
        LearnerClient::with_interceptor(channel, creds.token.clone())
            .max_decoding_message_size(s.max_message_bytes)
            .max_encoding_message_size(s.max_message_bytes),
    )
}

/// Who a client is, for `Register`.
#[derive(Clone, Debug)]
pub struct Identity {
    pub role: Role,
    pub name: String,
    pub model_config: ModelConfig,
    pub vocab_hash: String,
}

impl Identity {
    /// Registers; the response, or the refusal.
    pub async fn register(&self, client: &mut Client) -> Result<RegisterResponse, Status> {
        let req = RegisterRequest {
            protocol_version: qd_proto::PROTOCOL_VERSION,
            model_config_hash: self.model_config.hash(),
            model_config_json: serde_json::to_string(&self.model_config).unwrap_or_default(),
            vocab_hash: self.vocab_hash.clone(),
            role: self.role as i32,
            name: self.name.clone(),
        };
        Ok(client.register(req).await?.into_inner())
    }

    /// Metadata that identifies this client's streams to the learner.
    pub fn tag<T>(&self, mut req: Request<T>, id: u64) -> Request<T> {
        let m = req.metadata_mut();
        if let Ok(v) = id.to_string().parse() {
            m.insert("qd-actor-id", v);
        }
        if let Ok(v) = self.name.parse() {
            m.insert("qd-client-name", v);
        }
        let role = if self.role == Role::Evaluator {
            "evaluator"
        } else {
            "actor"
        };
        m.insert("qd-role", tonic::metadata::MetadataValue::from_static(role));
        req
    }
}

/// Errors that retrying cannot fix: the learner refused this client.
pub fn is_fatal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition | Code::Unauthenticated
    )
}

/// Exponential back-off with jitter: each delay uniform in [d/2, d], d doubling up to
/// `backoff_max_ms`. Hand-written on purpose (twenty lines): the reconnect loop is not a
/// retried closure, and it resets the back-off only once a session's streams were
/// accepted, which a retry crate's policy (backon's, say) would need wrapping for.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    /// When a connection last had its streams accepted (or the client started).
    connected: std::time::Instant,
}

impl Backoff {
    pub fn new(s: &ClientSettings) -> Backoff {
        let initial = Duration::from_millis(s.backoff_initial_ms);
        Backoff {
            initial,
            max: Duration::from_millis(s.backoff_max_ms),
            current: initial,
            connected: std::time::Instant::now(),
        }
    }

    /// The next delay: uniform in [current/2, current], then current doubles.
    pub fn next_delay(&mut self) -> Duration {
        let c = self.current;
        self.current = (self.current * 2).min(self.max);
        let lo = c.as_secs_f64() / 2.0;
        Duration::from_secs_f64(rand::thread_rng().gen_range(lo..=c.as_secs_f64().max(lo)))
    }

    /// A connection had its streams accepted: the delays start over.
    pub fn reset(&mut self) {
        self.current = self.initial;
        self.connected = std::time::Instant::now();
    }

    /// Time since a connection last had its streams accepted (or the client started).
    pub fn without_learner(&self) -> Duration {
        self.connected.elapsed()
    }
}
