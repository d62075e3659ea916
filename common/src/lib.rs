//! qd's shared library.
//!
//! Layout:
//! - [`folk`]: the default task, text-to-tune on a folk-music corpus (parser, tokens,
//!   captions, MIDI, dataset);
//! - [`model`]: the policy transformer, sampling, optimizer and checkpoints;
//! - [`torch`]: libtorch facts (version, devices, threads);
//! - [`fsutil`]: atomic file writes.

pub mod folk;
pub mod fsutil;
pub mod model;
pub mod torch;
