//! The service core every role shares.
//!
//! Layout:
//! - [`settings`]: the layered configuration (defaults ← TOML ← `QD__…` ← `--set`) and
//!   its validation;
//! - [`telemetry`]: logging, the Prometheus endpoint, metric catalogues, and the ready
//!   file a started process writes;
//! - [`shutdown`]: the stop signal (SIGTERM, Ctrl-C);
//! - [`tls`]: a deployment's certificates (`qd tls init`).

pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
