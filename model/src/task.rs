//! The boundary between the method and a task.
//!
//! The method — a CFG teacher, on-policy distillation, the pair-diversity reward,
//! merging, evaluation and sweeps — needs five things from a task, and only these:
//!
//! - its **vocabulary**: the special ids, the ids a sample may hold and the groups that
//!   content-scoped guidance re-weighs within ([`Vocabulary`]), and a hash naming it;
//! - its **prompts** of each split, as ids, each with a reference output when the task
//!   has one;
//! - the **embedder** whose `1 − cos` between two samples of a prompt is the diversity
//!   reward and the diversity metric ([`Embedder`]);
//! - the **judge** that scores a sample for its prompt at evaluation time ([`Judge`]),
//!   and optionally a validity check by a tool outside the project;
//! - how a sample is **written for people** to open.
//!
//! The actor, learner, evaluator, merging and sweep take an `Arc<dyn Task>` and nothing
//! else from the task. The text-to-tune task (crate `folk`) implements it; the tests run
//! a second, synthetic one through the same actor and learner.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::sampling::Vocabulary;

/// A split of a task's prompts.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        })
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Split, String> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            _ => Err(format!("unknown split {s:?} (expected train, val or test)")),
        }
    }
}

/// One prompt of a split.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    /// Prompt ids, without `<sep>`; empty is the unconditional prompt.
    pub ids: Vec<u32>,
    /// A real output for this prompt (the judge's score of it is what a perfect policy
    /// would reach), if the task has one.
    pub reference: Option<Vec<u32>>,
    /// Where the prompt comes from (the folk task: its tune's collection): evaluation
    /// draws its prompts in proportion to the strata, and reports each stratum.
    pub stratum: String,
}

/// The two factors of a sample's quality; quality is their product, in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// How well the sample follows its prompt.
    pub adherence: f64,
    /// How well-formed the sample is on its own.
    pub validity: f64,
}

impl Score {
    pub fn quality(&self) -> f64 {
        self.adherence * self.validity
    }
}

/// A task the method can be trained and evaluated on.
pub trait Task: Send + Sync + std::fmt::Debug {
    /// A short name for logs (`folk`).
    fn name(&self) -> &str;
    /// The special ids, the ids a sample may hold and the guidance groups.
    fn vocabulary(&self) -> &Vocabulary;
    /// How many ids the vocabulary has (a policy's `vocab_size`).
    fn vocab_size(&self) -> usize;
    /// A hash naming the vocabulary; checkpoints and `Register` carry it.
    fn vocab_hash(&self) -> String;
    /// The prompts of a split, in a fixed order.
    fn prompts(&self, split: Split) -> Vec<Prompt>;
    /// The frozen embedder of the diversity reward, on `device`.
    fn embedder(&self, device: Device) -> Result<Box<dyn Embedder>>;
    /// The judge of evaluation, on `device`.
    fn judge(&self, device: Device) -> Result<Box<dyn Judge>>;
    /// Writes a sample for people to open, as files named `stem.*`, titled `title`;
    /// `number` counts the samples written together, from 1.
    fn write_sample(
        &self,
        title: &str,
        number: u32,
        sample: &[u32],
        stem: &Path,
    ) -> Result<Written>;
    /// Validity of samples as a checker outside the project finds it (the folk task: the
    /// share of bars `abc2midi` does not warn about), one value per sample (NaN for one
    /// with nothing to check); `None` where the task has no such checker.
    fn external_validity(&self, _samples: &[&[u32]]) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }
    /// A fingerprint of everything evaluating on this task depends on besides the policy
    /// (prompts, references, embedder and judge weights): caches of evaluations key on it.
    fn fingerprint(&self) -> Result<String>;
}

/// A sample as [`Task::write_sample`] wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// The files, e.g. `stem.abc` and `stem.mid`.
    pub files: Vec<PathBuf>,
    /// The sample as text, for a terminal.
    pub text: String,
    /// Why a file could not be written (the sample is malformed for that format).
    pub note: Option<String>,
}

/// Maps samples to unit vectors; `1 − cos` of two is their diversity.
pub trait Embedder: Send + std::fmt::Debug {
    /// The embedding's width.
    fn dim(&self) -> i64;
    /// Unit-norm embeddings `[B, dim]` of samples as generated (`<eos>` included or not).
    fn embed(&self, samples: &[&[u32]]) -> Tensor;
}

/// Scores samples for their prompts (evaluation only, never a training reward).
pub trait Judge: Send + std::fmt::Debug {
    /// The score of each `(prompt, sample)`, the prompt an index into
    /// [`Task::prompts`]`(split)`; an error for an index out of range.
    fn scores(&self, split: Split, rows: &[(usize, &[u32])]) -> Result<Vec<Score>>;
}

/// `1 − cos` between the rows of two batches of unit embeddings, in `[0, 2]`.
pub fn pair_diversity(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    let cos = (a * b).sum_dim_intlist(1, false, Kind::Float);
    let d = (cos.neg() + 1.0)
        .clamp(0.0, 2.0)
        .to_kind(Kind::Double)
        .to_device(Device::Cpu);
    Ok(Vec::<f64>::try_from(&d)?)
}

/// The diversity reward `1 − cos(E(y¹), E(y²))` of each pair of samples.
pub fn pair_rewards(e: &dyn Embedder, pairs: &[(&[u32], &[u32])]) -> Result<Vec<f64>> {
    let a: Vec<&[u32]> = pairs.iter().map(|p| p.0).collect();
    let b: Vec<&[u32]> = pairs.iter().map(|p| p.1).collect();
    tch::no_grad(|| pair_diversity(&e.embed(&a), &e.embed(&b)))
}
