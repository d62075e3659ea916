//! qd's gRPC protocol: the messages and the `Learner` service of `qd.proto` (package
//! `qd.v1`), client and server.

#![allow(missing_debug_implementations, clippy::all)]

tonic::include_proto!("qd.v1");

/// Bumped whenever `qd.proto` changes incompatibly; checked at `Register`.
pub const PROTOCOL_VERSION: u32 = 1;
