//! The models and the method's machinery, independent of any task.
//!
//! Layout:
//! - [`task`]: the boundary between the method and a task (vocabulary, prompts,
//!   embedder, judge, how samples are written) and the pair-diversity reward;
//! - [`config`]: architecture and size presets;
//! - [`structure`]: features a task reads in an output as it grows (the folk task: where
//!   in the bar each token falls), which a policy embeds beside each token;
//! - [`transformer`]: the decoder-only transformer (and the encoder trunk) with its KV
//!   cache;
//! - [`sampling`]: batched sampling with temperature, top-k and CFG (`guide`, the one CFG
//!   formula the sampler and the learner's teacher share);
//! - [`batch`]: training sequences and the language-model loss;
//! - [`optim`]: AdamW with savable state, gradient clipping;
//! - [`train`]: the training loop of the pre-training and the encoders (`fit`), its
//!   descent step, schedule and progress bar;
//! - [`checkpoint`]: safetensors checkpoints with metadata, and their errors;
//! - [`merge`]: LERP and uniform averages of policy checkpoints;
//! - [`device`]: libtorch facts (version, devices, threads);
//! - [`fsutil`]: atomic file writes; [`fnv`]: the small stable hash ids and seeds use.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod fnv;
pub mod fsutil;
pub mod merge;
pub mod optim;
pub mod sampling;
pub mod structure;
pub mod task;
pub mod train;
pub mod transformer;
