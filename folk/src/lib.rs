//! The text-to-tune task: folk tunes in ABC notation, captioned from their metadata, and
//! the models trained for it.
//!
//! Layout:
//! - [`task`]: the task behind the method's boundary ([`model::task::Task`]);
//! - [`music`]: durations, meters, keys and pitches;
//! - [`abc`]: the ABC parser (text → tokens, or a skip reason);
//! - [`abc2midi`]: bar lengths as `abc2midi`, a parser not the project's own, checks them;
//! - [`tune`]: the token type and its grouping into notes;
//! - [`bars`]: bar-length accounting against the meter;
//! - [`metrical`]: where each token falls in its bar, the structure policies embed;
//! - [`remi`]: the alternative measured against it, explicit position tokens (REMI);
//! - [`render`], [`midi`]: tokens → ABC text, tokens → Standard MIDI File;
//! - [`caption`]: attributes and prompts from metadata;
//! - [`vocab`]: ids for prompt words and tune tokens;
//! - [`dataset`]: `qd data prepare` and the prepared dataset;
//! - [`pretrain`]: `qd pretrain`, the base policy (MLE with condition dropout);
//! - [`embedder`]: the diversity embedder and `qd embedder train` (InfoNCE on crops);
//! - [`judge`]: the quality judge and `qd judge train` (attributes × bar validity).

pub mod abc;
pub mod abc2midi;
pub mod bars;
pub mod caption;
pub mod dataset;
pub mod embedder;
pub mod judge;
pub mod metrical;
pub mod midi;
pub mod music;
pub mod pretrain;
pub mod remi;
pub mod render;
pub mod task;
pub mod tune;
pub mod vocab;

pub use task::FolkTask;
