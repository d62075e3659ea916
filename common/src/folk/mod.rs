//! The text-to-tune task: folk tunes in ABC notation, captioned from their metadata.
//!
//! Layout:
//! - [`music`]: durations, meters, keys and pitches;
//! - [`abc`]: the ABC parser (text → tokens, or a skip reason);
//! - [`tune`]: the token type and its grouping into notes;
//! - [`bars`]: bar-length accounting against the meter;
//! - [`render`], [`midi`]: tokens → ABC text, tokens → Standard MIDI File;
//! - [`caption`]: attributes and prompts from metadata;
//! - [`vocab`]: ids for prompt words and tune tokens;
//! - [`dataset`]: `qd data prepare` and the prepared dataset.

pub mod abc;
pub mod bars;
pub mod caption;
pub mod dataset;
pub mod midi;
pub mod music;
pub mod render;
pub mod tune;
pub mod vocab;
