//! qd's gRPC protocol: the messages and the `Learner` service of `qd.proto` (package
//! `qd.v1`), client and server.

#![allow(missing_debug_implementations, clippy::all)]

tonic::include_proto!("qd.v1");

pub mod codec;

/// Bumped whenever `qd.proto` changes incompatibly; checked at `Register`.
pub const PROTOCOL_VERSION: u32 = 1;

/// HTTP/2 flow-control windows of clients, which receive weights: large enough that a
/// version of the `small` model (3.6 MB) is never held back by the 64 KiB protocol
/// default. The learner's own windows are sized to what clients send it
/// (`learner::transport`).
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// Largest HTTP/2 frame a client accepts (the protocol's default is 16 KiB): weights
/// arrive in 1 MiB frames, a fraction of the per-frame work and system calls (measured
/// by `qd bench service`, docs/performance.md). The learner keeps the default for what
/// clients send it, which is small.
pub const CLIENT_MAX_FRAME: u32 = 1 << 20;
