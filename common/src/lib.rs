//! qd's shared library.
//!
//! Layout:
//! - [`folk`]: the default task, text-to-tune on a folk-music corpus (parser, tokens,
//!   captions, MIDI, dataset);
//! - [`bench`]: generation throughput, with and without CFG, against PyTorch;
//! - [`eval`]: quality and diversity of a policy on held-out prompts;
//! - [`front`]: quality–diversity fronts and their hypervolume;
//! - [`model`]: the policy transformer, sampling, optimizer and checkpoints;
//! - [`torch`]: libtorch facts (version, devices, threads);
//! - [`fsutil`]: atomic file writes;
//! - [`settings`]: the service's layered configuration;
//! - [`telemetry`]: logging and the Prometheus endpoint.

pub mod bench;
pub mod eval;
pub mod folk;
pub mod front;
pub mod fsutil;
pub mod model;
pub mod settings;
pub mod telemetry;
pub mod torch;
