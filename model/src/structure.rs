//! Structure a task reads in an output as it grows, given to the policy beside each token.
//!
//! Some of what makes an output well formed is arithmetic over its prefix that a small
//! model learns slowly from tokens alone: in the folk task, where in the bar the next note
//! falls and how much of the bar is left. A task may name such a function
//! ([`Structure`]): a deterministic map from the output prefix to a few small feature ids
//! per token, read incrementally ([`Cursor::read`] is O(1) per token, never a re-parse of
//! the prefix). A policy whose config names the structure ([`StructureSpec`]) embeds the
//! ids of each position and adds them to the token embedding; every path that runs it —
//! pre-training batches, the KV-cached decoder (sampling, CFG, evaluation), the learner's
//! teacher and student passes — computes them here, through the one function
//! [`row_features`] or a [`Cursor`] per decoded row.
//!
//! Positions of the prompt hold feature 0 ("none"); the position of `<sep>` holds the
//! features of the empty output; the position of each output id holds the features after
//! reading it (what the model predicts the next id from). The unconditional rows of CFG
//! read the same output, so they get the same features.

use std::fmt::Debug;

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::config::ModelConfig;
use crate::sampling::Vocabulary;

/// What a policy's structure embedding was trained on: the function (by name; a changed
/// function is a new name) and the shape of its ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructureSpec {
    /// Names the function, e.g. `folk-metre-1`.
    pub name: String,
    /// Feature ids per token.
    pub per_token: i64,
    /// How many ids the features take (their embedding's rows; id 0 is "none").
    pub ids: i64,
}

/// A task's structure function (see the module's documentation).
pub trait Structure: Send + Sync + Debug {
    fn spec(&self) -> StructureSpec;
    /// The state before the first output id (the position of `<sep>`).
    fn start(&self) -> Box<dyn Cursor>;
}

/// The structure of one growing output.
pub trait Cursor: Send {
    /// Writes the `per_token` feature ids of the position holding the last id read (of
    /// `<sep>` before any).
    fn features(&self, out: &mut [i64]);
    /// Reads the next output id.
    fn read(&mut self, id: u32);
}

/// Why a policy cannot run with a task's structure.
pub fn check(config: &ModelConfig, structure: Option<&dyn Structure>) -> Result<(), String> {
    let theirs = structure.map(|s| s.spec());
    match (&config.structure, theirs) {
        (None, _) => Ok(()),
        (Some(ours), Some(theirs)) if *ours == theirs => Ok(()),
        (Some(ours), Some(theirs)) => Err(format!(
            "the policy was trained with the structure {ours:?}, the task reads {theirs:?}"
        )),
        (Some(ours), None) => Err(format!(
            "the policy was trained with the structure {:?}, which this task does not read",
            ours.name
        )),
    }
}

/// The structure `config`'s policy runs with: the vocabulary's, when the policy has a
/// structure embedding. A policy is loaded for a task only after [`check`] passed, so a
/// policy with an embedding always meets a vocabulary with its structure.
pub fn of<'a>(config: &ModelConfig, v: &'a Vocabulary) -> Option<&'a dyn Structure> {
    config.structure.as_ref().map(|spec| {
        v.structure
            .as_deref()
            .unwrap_or_else(|| panic!("the policy needs the structure {:?}", spec.name))
    })
}

/// The features of a row `[prompt] <sep> output`, `per_token` ids per position,
/// position-major: `(prompt_len + 1 + output.len()) × per_token` ids.
pub fn row_features(structure: &dyn Structure, prompt_len: usize, output: &[u32]) -> Vec<i64> {
    let k = structure.spec().per_token as usize;
    let mut out = vec![0i64; (prompt_len + 1 + output.len()) * k];
    let mut cursor = structure.start();
    let mut at = prompt_len * k;
    cursor.features(&mut out[at..at + k]);
    for &id in output {
        cursor.read(id);
        at += k;
        cursor.features(&mut out[at..at + k]);
    }
    out
}

/// The features of a batch as the model takes them, `[B, T, per_token]`: `rows[i]` holds
/// row `i`'s features (`per_token` ids a position) placed from position `starts[i]`; the
/// rest is 0.
pub fn batch_tensor(
    rows: &[Vec<i64>],
    starts: &[usize],
    t: usize,
    per_token: usize,
    device: Device,
) -> Tensor {
    let mut all = vec![0i64; rows.len() * t * per_token];
    for (i, (r, &s)) in rows.iter().zip(starts).enumerate() {
        let from = (i * t + s) * per_token;
        let n = r.len().min((t - s.min(t)) * per_token);
        all[from..from + n].copy_from_slice(&r[..n]);
    }
    Tensor::from_slice(&all)
        .view([rows.len() as i64, t as i64, per_token as i64])
        .to(device)
}

/// Cursors for the rows of a decoded batch: the features of each row's last position.
pub struct Cursors {
    cursors: Vec<Box<dyn Cursor>>,
    per_token: usize,
}

impl std::fmt::Debug for Cursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cursors({} rows)", self.cursors.len())
    }
}

impl Cursors {
    pub fn start(structure: &dyn Structure, rows: usize) -> Cursors {
        Cursors {
            cursors: (0..rows).map(|_| structure.start()).collect(),
            per_token: structure.spec().per_token as usize,
        }
    }

    /// Keeps the rows whose `keep` is true, in order (the batch dropped the others).
    pub fn retain(&mut self, keep: &[bool]) {
        let mut k = keep.iter();
        self.cursors.retain(|_| k.next().copied().unwrap_or(false));
    }

    /// Reads one id per row; `None` leaves a row as it is (a finished row).
    pub fn read(&mut self, ids: &[Option<u32>]) {
        for (c, id) in self.cursors.iter_mut().zip(ids) {
            if let Some(id) = id {
                c.read(*id);
            }
        }
    }

    /// `[rows, 1, per_token]`: each row's current features, the rows repeated `times`
    /// (CFG's unconditional rows read the same outputs).
    pub fn tensor(&self, times: usize, device: Device) -> Tensor {
        let k = self.per_token;
        let mut f = vec![0i64; self.cursors.len() * k];
        for (c, out) in self.cursors.iter().zip(f.chunks_mut(k)) {
            c.features(out);
        }
        let one = f.clone();
        for _ in 1..times {
            f.extend_from_slice(&one);
        }
        Tensor::from_slice(&f)
            .view([(self.cursors.len() * times) as i64, 1, k as i64])
            .to(device)
    }
}
