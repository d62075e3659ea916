//! `[learner]`: the learner's settings, their defaults and their checks.

use model::sampling::CfgScope;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Checks;

/// The divergence between student and CFG teacher in the distillation term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Divergence {
    /// `KL(π_θ ‖ π_cfg)` (mode seeking).
    ReverseKl,
    /// `KL(π_cfg ‖ π_θ)` (mass covering).
    ForwardKl,
    /// Generalised Jensen–Shannon with weight `jsd_alpha` on the student.
    Jsd,
}

/// The baseline subtracted from the diversity reward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    None,
    BatchMean,
    Ema,
}

/// What gradient clipping bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GradClip {
    /// The whole gradient's global norm: when the policy-gradient term's gradient is the
    /// larger, clipping shrinks the distillation part of the update with it.
    Total,
    /// Each term's gradient on its own (`L_distill`'s and `β·L_pg`'s), then their sum: the
    /// distillation part of the update keeps its size whatever β is — and so does the
    /// policy-gradient part once `β·L_pg`'s gradient exceeds the bound, so β then stops
    /// mattering (measured in docs/results.md, "Clipping each term on its own").
    PerTerm,
}

/// `qd learner`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerSettings {
    /// gRPC address to serve on (port 0: any free port, written to the endpoints file).
    pub listen: String,
    /// Prometheus `/metrics` address ("" to disable).
    pub metrics_listen: String,
    /// Prompts (pairs of samples) per training step.
    pub batch_prompts: usize,
    /// Weight of the diversity policy-gradient term.
    pub beta: f64,
    /// CFG strength of the frozen teacher.
    pub cfg_gamma: f64,
    /// The teacher's plausibility constraint: ids whose conditional probability is below
    /// this share of the most likely id's get (almost) no teacher probability (0, the
    /// default: off, plain CFG). See `qd eval --cfg-plausibility`. On the default base
    /// model the constraint alone (a truncation any sampler applies in one pass) gives the
    /// quality the constrained teachers gain, and guidance adds none to it that can be
    /// told; content-scoped guidance without it raises quality on its own
    /// (docs/results.md, claim 1), which is what distillation is for.
    pub cfg_plausibility: f64,
    /// What the teacher's guidance re-weighs: `all` ids (standard CFG) or only the
    /// `content` (which pitch, key, meter; the default). See `qd eval --cfg-scope`.
    pub cfg_scope: CfgScope,
    /// The distillation divergence. The default, JSD, is bounded: with the reverse KL the
    /// teacher's excluded ids (log-prob −30) cost up to 30 nats per unit of student mass,
    /// and the default teacher's students collapsed within 25 steps (docs/results.md).
    pub divergence: Divergence,
    /// Student weight in the JSD mixture.
    pub jsd_alpha: f64,
    /// The baseline subtracted from the diversity reward: `batch_mean` (the batch's mean
    /// reward), `ema` (a running mean, `ema_decay`) or `none`.
    pub baseline: Baseline,
    /// Decay of the EMA baseline.
    pub ema_decay: f64,
    /// AdamW's learning rate (after the warm-up; constant).
    pub lr: f64,
    /// Steps of linear learning-rate warm-up from 0.
    pub warmup_steps: u64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// The largest global gradient norm (see `grad_clip_scope`).
    pub grad_clip: f64,
    /// `total` (the default) or `per_term`.
    pub grad_clip_scope: GradClip,
    /// Trajectories more than this many versions behind the learner are dropped.
    pub max_staleness: u64,
    /// Truncation of the importance weight `min(ρ̄, π_θ(y)/μ(y))` of the PG term.
    pub rho_bar: f64,
    /// Publish the student every this many steps.
    pub publish_every: u64,
    /// Write a checkpoint every this many steps (and on SIGTERM).
    pub checkpoint_every: u64,
    /// Checkpoints kept in `run_dir` (the oldest are deleted).
    pub keep_checkpoints: usize,
    /// Stop after this many steps (0: never).
    pub max_steps: u64,
    /// After the last step, how long the learner keeps serving so that its clients hear
    /// that the run has finished (it leaves as soon as every weight stream has ended).
    pub finish_grace_s: u64,
    /// Trajectories the queue holds before PushTrajectories waits.
    pub queue_capacity: usize,
    /// Size of the chunks weights are streamed in. A version that fits in one chunk
    /// reaches an actor without being copied out of its message; larger ones are copied
    /// together. Each subscriber's sender holds one encoded chunk while it is sent, so a
    /// subscriber that stops reading holds this much: `limits.max_watchers` × this is
    /// what stalled subscribers can make the learner hold.
    pub chunk_bytes: usize,
    /// Largest gRPC message the learner sends (a weight chunk and its header). What it
    /// accepts is bounded by the batch shape instead (docs/reliability.md).
    pub max_message_bytes: usize,
    /// libtorch threads (0: all cores).
    pub threads: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Seeds libtorch's generator when a run starts (a resumed run seeds it from its
    /// checkpoint's seed and step).
    pub seed: u64,
}

impl Default for LearnerSettings {
    fn default() -> LearnerSettings {
        LearnerSettings {
            listen: "127.0.0.1:50051".into(),
            metrics_listen: "127.0.0.1:9100".into(),
            batch_prompts: 8,
            beta: 0.0,
            cfg_gamma: 3.0,
            cfg_plausibility: 0.0,
            cfg_scope: CfgScope::Content,
            divergence: Divergence::Jsd,
            jsd_alpha: 0.5,
            baseline: Baseline::BatchMean,
            ema_decay: 0.9,
            lr: 5e-4,
            warmup_steps: 10,
            weight_decay: 0.0,
            grad_clip: 1.0,
            grad_clip_scope: GradClip::Total,
            max_staleness: 4,
            rho_bar: 1.0,
            publish_every: 1,
            checkpoint_every: 25,
            keep_checkpoints: 3,
            max_steps: 150,
            finish_grace_s: 30,
            queue_capacity: 16,
            chunk_bytes: 4 << 20,
            max_message_bytes: 64 << 20,
            threads: 0,
            device: "cpu".into(),
            seed: 0,
        }
    }
}

impl LearnerSettings {
    pub(super) fn validate(&self, c: &mut Checks) {
        c.positive("learner.batch_prompts", self.batch_prompts as u64);
        c.check(
            self.beta.is_finite() && self.beta >= 0.0,
            "learner.beta",
            "must be a finite number ≥ 0",
            self.beta,
        );
        c.check(
            (0.0..=1.0).contains(&self.cfg_plausibility),
            "learner.cfg_plausibility",
            "must be in [0, 1]",
            self.cfg_plausibility,
        );
        c.check(
            self.cfg_gamma.is_finite() && self.cfg_gamma >= 0.0,
            "learner.cfg_gamma",
            "must be a finite number ≥ 0",
            self.cfg_gamma,
        );
        c.check(
            self.jsd_alpha > 0.0 && self.jsd_alpha < 1.0,
            "learner.jsd_alpha",
            "must be in (0, 1)",
            self.jsd_alpha,
        );
        c.check(
            (0.0..1.0).contains(&self.ema_decay),
            "learner.ema_decay",
            "must be in [0, 1)",
            self.ema_decay,
        );
        c.check(
            self.lr.is_finite() && self.lr > 0.0,
            "learner.lr",
            "must be > 0",
            self.lr,
        );
        c.check(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "learner.weight_decay",
            "must be ≥ 0",
            self.weight_decay,
        );
        c.check(
            self.grad_clip > 0.0,
            "learner.grad_clip",
            "must be > 0",
            self.grad_clip,
        );
        c.check(
            self.rho_bar > 0.0,
            "learner.rho_bar",
            "must be > 0",
            self.rho_bar,
        );
        c.positive("learner.publish_every", self.publish_every);
        c.positive("learner.checkpoint_every", self.checkpoint_every);
        c.positive("learner.keep_checkpoints", self.keep_checkpoints as u64);
        c.check(
            self.queue_capacity >= self.batch_prompts,
            "learner.queue_capacity",
            "must hold at least one batch (learner.batch_prompts)",
            self.queue_capacity,
        );
        c.check(
            self.chunk_bytes >= 1024 && self.chunk_bytes + 4096 <= self.max_message_bytes,
            "learner.chunk_bytes",
            "must be ≥ 1024 and fit in learner.max_message_bytes",
            self.chunk_bytes,
        );
        c.address("learner.listen", &self.listen);
        c.metrics_address("learner.metrics_listen", &self.metrics_listen);
        c.device("learner.device", &self.device);
    }
}
