//! `[actor]` and `[evaluator]`: the clients' settings, their defaults and their checks.

use model::task::Split;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Checks;

/// `qd actor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ActorSettings {
    /// Prompts per rollout (two samples each).
    pub batch_prompts: usize,
    /// The longest sample, in tokens (a sample ends earlier at the end-of-tune token).
    pub max_new_tokens: usize,
    /// Prometheus `/metrics` address ("" to disable).
    pub metrics_listen: String,
    /// Shown in the learner's logs (default: host name and process id).
    pub name: String,
    /// libtorch threads (0: all cores).
    pub threads: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Seeds prompt order and sampling, mixed with the actor's name (replicas of one
    /// config roll out different data).
    pub seed: u64,
    /// Roll out once per published version: after each batch, wait for the learner's
    /// next version. With `learner.batch_prompts` = actors × `actor.batch_prompts`, every
    /// step trains on one batch of each actor sampled from the current weights, and a
    /// seeded run is reproducible bit for bit (for debugging and tests; slower).
    pub synchronous: bool,
}

impl Default for ActorSettings {
    fn default() -> ActorSettings {
        ActorSettings {
            batch_prompts: 8,
            max_new_tokens: 256,
            metrics_listen: "127.0.0.1:9102".into(),
            name: String::new(),
            threads: 0,
            device: "cpu".into(),
            seed: 1,
            synchronous: false,
        }
    }
}

/// `qd evaluator`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluatorSettings {
    /// Evaluate a version when it is at least this many past the last one evaluated.
    pub every_versions: u64,
    /// The held-out split evaluated (`val` by default: the evaluator's numbers are for
    /// watching and developing a run; `test` gives the final word once).
    pub split: Split,
    /// Held-out prompts evaluated: a sample of the split drawn in proportion to its
    /// strata (the folk task's collections), the same at every version.
    pub prompts: usize,
    /// Samples per prompt (at least 2).
    pub samples_per_prompt: usize,
    /// The longest sample, in tokens.
    pub max_new_tokens: usize,
    /// Prometheus `/metrics` address ("" to disable).
    pub metrics_listen: String,
    /// The folder `eval.jsonl` is appended to ("": the run folder, `paths.run_dir`);
    /// compose gives the evaluator a volume of its own, so that it writes nothing the
    /// learner reads.
    pub results_dir: String,
    /// libtorch threads (0: all cores).
    pub threads: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Seeds the held-out prompts drawn and the sampling (the same at every version).
    pub seed: u64,
}

impl Default for EvaluatorSettings {
    fn default() -> EvaluatorSettings {
        EvaluatorSettings {
            every_versions: 25,
            split: Split::Val,
            prompts: 32,
            samples_per_prompt: 2,
            max_new_tokens: 256,
            metrics_listen: "127.0.0.1:9101".into(),
            results_dir: String::new(),
            threads: 0,
            device: "cpu".into(),
            seed: 7,
        }
    }
}

impl ActorSettings {
    pub(super) fn validate(&self, c: &mut Checks) {
        c.positive("actor.batch_prompts", self.batch_prompts as u64);
        c.positive("actor.max_new_tokens", self.max_new_tokens as u64);
        c.metrics_address("actor.metrics_listen", &self.metrics_listen);
        c.device("actor.device", &self.device);
    }
}

impl EvaluatorSettings {
    pub(super) fn validate(&self, c: &mut Checks) {
        c.positive("evaluator.every_versions", self.every_versions);
        c.check(
            self.split != Split::Train,
            "evaluator.split",
            "must be a held-out split (val or test)",
            self.split,
        );
        c.positive("evaluator.prompts", self.prompts as u64);
        c.check(
            self.samples_per_prompt >= 2,
            "evaluator.samples_per_prompt",
            "must be at least 2",
            self.samples_per_prompt,
        );
        c.positive("evaluator.max_new_tokens", self.max_new_tokens as u64);
        c.metrics_address("evaluator.metrics_listen", &self.metrics_listen);
        c.device("evaluator.device", &self.device);
    }
}
