//! How the learner's gRPC server meets the network: its HTTP/2 transport settings, the
//! bearer-token check every call passes, and the release of the memory closed streams
//! held.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Status};

use common::settings::LimitSettings;

use crate::metrics as m;

/// The gRPC server with qd's transport settings: HTTP/2 receive windows sized to the
/// largest message a client may send (`request_bytes`), the streams per connection,
/// keepalive pings and the time limit of a call.
///
/// The learner's receive windows bound what a client can make it buffer unread (a
/// trajectory stream held back by a full queue): a stream window holds one whole
/// message, a connection's two. Weights flow the other way, paced by the clients' own
/// windows ([`qd_proto::STREAM_WINDOW`]).
pub fn transport(l: &LimitSettings, request_bytes: usize) -> tonic::transport::Server {
    let keepalive = Duration::from_secs(l.keepalive_s);
    let stream_window = receive_window(request_bytes);
    tonic::transport::Server::builder()
        .initial_stream_window_size(stream_window)
        .initial_connection_window_size(stream_window.saturating_mul(2))
        .max_concurrent_streams(l.max_streams_per_connection)
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(keepalive * 2))
        .timeout(Duration::from_secs(l.request_timeout_s))
}

/// A stream's receive window: one message and its 5-byte gRPC header, at least
/// HTTP/2's default, at most the clients' window.
pub fn receive_window(request_bytes: usize) -> u32 {
    u32::try_from(request_bytes + 5)
        .unwrap_or(u32::MAX)
        .clamp(65_535, qd_proto::STREAM_WINDOW)
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
        // Constant time for tokens of the same length: how much of a guess is right
        // does not show in the answer's timing.
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            token.as_bytes(),
        )) {
            Ok(req)
        } else {
            metrics::counter!(m::UNAUTHENTICATED).increment(1);
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

/// Hands the memory that closed streams' buffers held back to the system, at most every
/// two seconds: glibc's allocator keeps freed memory otherwise, and a learner that a
/// burst of streams grew would stay grown.
/// `closed` is set whenever a stream ends.
pub async fn release_memory(closed: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        if closed.swap(false, Ordering::Relaxed) {
            trim();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no
    // pointers and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
