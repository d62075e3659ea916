//! Evaluation of policies on a task, and the paper's comparisons built on it.
//!
//! Layout:
//! - [`evaluate`]: quality and diversity of a policy on held-out prompts (`qd eval`, the
//!   evaluator role);
//! - [`front`]: quality–diversity fronts and their hypervolume;
//! - [`plot`]: line charts as PNG and SVG (the sweep's figures, `qd bench scaling`);
//! - [`compare`]: `qd compare A B`, two operating points side by side, per prompt;
//! - [`curve`]: learning curves of evaluated checkpoints against their step (`qd curve`);
//! - [`stats`]: 95% intervals (bootstrap over prompts, paired; t over runs);
//! - [`sweep`]: `qd sweep`, every family of operating points on shared prompts and seeds,
//!   cached, with tables and figures;

pub mod compare;
pub mod curve;
pub mod evaluate;
pub mod front;
pub mod plot;
pub mod stats;
pub mod sweep;
