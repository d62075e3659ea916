//! `[client]`, `[auth]` and `[limits]`: how clients reach the learner, who may, and what
//! the learner lets them make it hold — the settings, their defaults and their checks.

use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Checks;

/// How actors and evaluators reach the learner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// The learner's gRPC endpoint.
    pub learner: String,
    /// First reconnection delay; doubles up to `backoff_max_ms`, with jitter.
    pub backoff_initial_ms: u64,
    /// The longest reconnection delay.
    pub backoff_max_ms: u64,
    /// Timeout of one connection attempt.
    pub connect_timeout_ms: u64,
    /// HTTP/2 keepalive ping interval (and TCP keepalive); a learner that does not
    /// answer a ping within twice this is taken as gone and the client reconnects.
    pub keepalive_s: u64,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// Exit with an error after this long without a learner (0: retry forever), so that
    /// a Job whose learner is gone for good fails instead of waiting. The default
    /// outlasts a learner's restart, its rescheduling on another node included.
    pub give_up_after_s: u64,
}

impl Default for ClientSettings {
    fn default() -> ClientSettings {
        ClientSettings {
            learner: "http://127.0.0.1:50051".into(),
            backoff_initial_ms: 200,
            backoff_max_ms: 2_000,
            connect_timeout_ms: 5_000,
            keepalive_s: 10,
            max_message_bytes: 64 << 20,
            give_up_after_s: 1800,
        }
    }
}

impl ClientSettings {
    pub(super) fn validate(&self, c: &mut Checks) {
        c.check(
            self.learner.starts_with("http://") || self.learner.starts_with("https://"),
            "client.learner",
            "must be an http:// or https:// URL",
            format!("{:?}", self.learner),
        );
        c.check(
            self.backoff_initial_ms >= 1 && self.backoff_initial_ms <= self.backoff_max_ms,
            "client.backoff_initial_ms",
            "must be ≥ 1 and ≤ client.backoff_max_ms",
            self.backoff_initial_ms,
        );
        c.positive("client.keepalive_s", self.keepalive_s);
        c.positive("client.connect_timeout_ms", self.connect_timeout_ms);
    }
}
/// Optional bearer-token authentication of every RPC, and optional TLS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The shared token ("" disables authentication): at least 16 bytes, e.g.
    /// `openssl rand -hex 32`. Prefer `token_file` or `QD__AUTH__TOKEN` to writing it
    /// in a config file.
    pub token: String,
    /// A file holding the token (read at start-up when `token` is empty; surrounding
    /// whitespace ignored): a mounted Kubernetes Secret, or the one compose's bootstrap
    /// generates.
    pub token_file: String,
    /// Let a learner without a token listen on a non-loopback address: any client that
    /// reaches the port can then register, push trajectories and read the weights.
    /// Without it, such a learner refuses to start.
    pub insecure: bool,
    /// The learner's TLS certificate chain (PEM); with `tls_key`, it serves TLS only.
    pub tls_cert: String,
    /// The learner's TLS private key (PEM).
    pub tls_key: String,
    /// The CA certificate (PEM) clients verify the learner with; needed for an
    /// `https://` `client.learner`.
    pub tls_ca: String,
    /// The name clients expect in the learner's certificate (default: the host of
    /// `client.learner`).
    pub tls_domain: String,
    /// Mutual TLS (learner): the CA (PEM) every client's certificate must chain to; a
    /// client without one is refused in the handshake. Needs `tls_cert`.
    pub tls_client_ca: String,
    /// Mutual TLS (clients): the certificate chain (PEM) they present.
    pub tls_client_cert: String,
    /// Mutual TLS (clients): the private key (PEM) of `tls_client_cert`.
    pub tls_client_key: String,
}

/// Tokens that were ever shipped as examples: refused, since anyone can read them.
pub const PLACEHOLDER_TOKENS: &[&str] = &["replace-me-with-a-random-token"];

/// The shortest token accepted.
pub const MIN_TOKEN_BYTES: usize = 16;

impl AuthSettings {
    /// Reads `token_file` into `token` when the token is not given directly.
    pub(super) fn resolve(&mut self) -> Result<()> {
        if self.token.is_empty() && !self.token_file.is_empty() {
            let t = std::fs::read_to_string(&self.token_file)
                .with_context(|| format!("auth.token_file: reading {}", self.token_file))?;
            self.token = t.trim().to_string();
            anyhow::ensure!(
                !self.token.is_empty(),
                "auth.token_file: {} is empty",
                self.token_file
            );
        }
        Ok(())
    }

    pub(super) fn validate(&self, c: &mut Checks) {
        c.check(
            self.token.is_empty()
                || (self.token.len() >= MIN_TOKEN_BYTES
                    && !PLACEHOLDER_TOKENS.contains(&self.token.as_str())),
            "auth.token",
            "must be at least 16 bytes and not an example token (generate one: openssl rand -hex 32)",
            // Never the token itself.
            format!("{} bytes", self.token.len()),
        );
        c.check(
            self.tls_cert.is_empty() == self.tls_key.is_empty(),
            "auth.tls_key",
            "and auth.tls_cert must be set together",
            format!("{:?}", self.tls_key),
        );
        c.check(
            self.tls_client_cert.is_empty() == self.tls_client_key.is_empty(),
            "auth.tls_client_key",
            "and auth.tls_client_cert must be set together",
            format!("{:?}", self.tls_client_key),
        );
        c.check(
            self.tls_client_ca.is_empty() || !self.tls_cert.is_empty(),
            "auth.tls_client_ca",
            "needs auth.tls_cert: mutual TLS is TLS first",
            format!("{:?}", self.tls_client_ca),
        );
        c.check(
            self.tls_client_cert.is_empty() || !self.tls_ca.is_empty(),
            "auth.tls_client_cert",
            "needs auth.tls_ca: a client certificate is presented over TLS",
            format!("{:?}", self.tls_client_cert),
        );
    }
}
/// What the learner lets its clients make it hold: connections, streams, time. Every
/// client is treated as possibly hostile; an honest actor uses one connection with one
/// weight stream and one trajectory stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Open TCP connections; further ones are closed at once, unless a connection that
    /// has sent nothing yet can be closed to make room (the oldest such).
    pub max_connections: usize,
    /// Open TCP connections from one IP address.
    pub max_connections_per_address: usize,
    /// A connection that has sent nothing (no HTTP/2 preface, no TLS hello) for this
    /// long is closed.
    pub handshake_timeout_s: u64,
    /// Concurrent HTTP/2 streams (calls) per connection.
    pub max_streams_per_connection: u32,
    /// Open `WatchWeights` streams, all clients together (RESOURCE_EXHAUSTED beyond).
    pub max_watchers: usize,
    /// Open `WatchWeights` streams per registered client id.
    pub max_watchers_per_client: usize,
    /// Open `PushTrajectories` streams, all clients together.
    pub max_push_streams: usize,
    /// Open `PushTrajectories` streams per registered client id.
    pub max_push_streams_per_client: usize,
    /// A trajectory stream that sends nothing for this long is ended (DEADLINE_EXCEEDED).
    pub idle_push_timeout_s: u64,
    /// HTTP/2 keepalive ping interval (server and clients); a peer that does not answer
    /// within twice this is dropped. TCP keepalive uses the same interval.
    pub keepalive_s: u64,
    /// Time limit for a unary call, for a stream's response to start, for a weight
    /// subscriber to take each chunk, and for a trajectory stream's client to read each
    /// acknowledgement (one that does not is dropped and reconnects).
    pub request_timeout_s: u64,
}

impl Default for LimitSettings {
    fn default() -> LimitSettings {
        LimitSettings {
            max_connections: 512,
            max_connections_per_address: 256,
            handshake_timeout_s: 10,
            max_streams_per_connection: 16,
            max_watchers: 128,
            max_watchers_per_client: 2,
            max_push_streams: 128,
            max_push_streams_per_client: 2,
            idle_push_timeout_s: 300,
            keepalive_s: 10,
            request_timeout_s: 30,
        }
    }
}

impl LimitSettings {
    pub(super) fn validate(&self, c: &mut Checks) {
        for (key, v) in [
            ("limits.max_connections", self.max_connections as u64),
            (
                "limits.max_connections_per_address",
                self.max_connections_per_address as u64,
            ),
            ("limits.handshake_timeout_s", self.handshake_timeout_s),
            (
                "limits.max_streams_per_connection",
                u64::from(self.max_streams_per_connection),
            ),
            ("limits.max_watchers", self.max_watchers as u64),
            (
                "limits.max_watchers_per_client",
                self.max_watchers_per_client as u64,
            ),
            ("limits.max_push_streams", self.max_push_streams as u64),
            (
                "limits.max_push_streams_per_client",
                self.max_push_streams_per_client as u64,
            ),
            ("limits.idle_push_timeout_s", self.idle_push_timeout_s),
            ("limits.keepalive_s", self.keepalive_s),
            ("limits.request_timeout_s", self.request_timeout_s),
        ] {
            c.positive(key, v);
        }
        c.check(
            self.max_streams_per_connection >= 3,
            "limits.max_streams_per_connection",
            "must allow an actor's three calls (Register, WatchWeights, PushTrajectories)",
            self.max_streams_per_connection,
        );
    }
}
