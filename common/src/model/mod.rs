//! The policy model and what trains, samples and stores it.
//!
//! - [`config`]: architecture and size presets;
//! - [`transformer`]: the decoder-only transformer with its KV cache;
//! - [`sampling`]: batched sampling with temperature, top-k and CFG;
//! - [`batch`]: training sequences and the language-model loss;
//! - [`optim`]: AdamW with savable state, gradient clipping;
//! - [`embedder`]: the diversity embedder (InfoNCE on crops);
//! - [`judge`]: the quality judge (attribute classifier × bar validity);
//! - [`train`]: the learning-rate schedule and progress bar every loop uses;
//! - [`checkpoint`]: safetensors checkpoints with metadata;
//! - [`merge`]: LERP and uniform averages of policy checkpoints;
//! - [`pretrain`]: `qd pretrain` and loading a policy for a dataset.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod embedder;
pub mod judge;
pub mod merge;
pub mod optim;
pub mod pretrain;
pub mod sampling;
pub mod train;
pub mod transformer;
