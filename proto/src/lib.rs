//! qd's gRPC protocol: the messages and the `Learner` service of `qd.proto` (package
//! `qd.v1`), client and server.

#![allow(missing_debug_implementations, clippy::all)]

tonic::include_proto!("qd.v1");

/// Bumped whenever `qd.proto` changes incompatibly; checked at `Register`.
pub const PROTOCOL_VERSION: u32 = 1;

/// HTTP/2 flow-control windows both sides use: large enough that a weight chunk (1 MiB
/// by default) is never held back by the 64 KiB protocol default.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;
