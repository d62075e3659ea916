//! The actor's and the evaluator's metrics: every name, its help text, histogram buckets
//! and how it starts. Both roles hold weights ([`Client`], each under its own prefix);
//! the actor adds [`ROLLOUT`], the evaluator [`EVAL`]. docs/metrics.md documents the same set (a test holds them
//! equal).

use common::telemetry::Metric;
use qd_proto::Role;

/// What every client of the learner exports about its weights and its connection,
/// under its role's prefix (`qd_actor_…`, `qd_evaluator_…`).
#[derive(Debug)]
pub struct Client {
    pub weight_version: &'static str,
    pub weight_sync_seconds: &'static str,
    pub weight_sync_bytes: &'static str,
    pub versions_refused: &'static str,
    pub reconnects: &'static str,
}

pub const ACTOR_CLIENT: Client = Client {
    weight_version: "qd_actor_weight_version",
    weight_sync_seconds: "qd_actor_weight_sync_seconds",
    weight_sync_bytes: "qd_actor_weight_sync_bytes_total",
    versions_refused: "qd_actor_versions_refused_total",
    reconnects: "qd_actor_reconnects_total",
};

pub const EVALUATOR_CLIENT: Client = Client {
    weight_version: "qd_evaluator_weight_version",
    weight_sync_seconds: "qd_evaluator_weight_sync_seconds",
    weight_sync_bytes: "qd_evaluator_weight_sync_bytes_total",
    versions_refused: "qd_evaluator_versions_refused_total",
    reconnects: "qd_evaluator_reconnects_total",
};

impl Client {
    /// The names of `role`'s process.
    pub fn of(role: Role) -> &'static Client {
        match role {
            Role::Evaluator => &EVALUATOR_CLIENT,
            _ => &ACTOR_CLIENT,
        }
    }

    fn catalogue(&self) -> [Metric; 5] {
        [
            Metric::gauge(self.weight_version, "policy version the client holds"),
            Metric::histogram(
                self.weight_sync_seconds,
                "first weight chunk received to weights loaded",
                &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            ),
            Metric::counter(self.weight_sync_bytes, "weight bytes received"),
            Metric::counter(
                self.versions_refused,
                "versions received whole that could not be loaded (kept the weights held)",
            ),
            Metric::counter(
                self.reconnects,
                "lost connections to the learner (each retried with back-off)",
            ),
        ]
    }
}

pub const TOKENS: &str = "qd_actor_tokens_total";
pub const ROLLOUT_SECONDS: &str = "qd_actor_rollout_seconds";
pub const REWARD: &str = "qd_actor_reward";
pub const REWARD_MEAN: &str = "qd_actor_reward_mean";
pub const TRAJECTORIES_SENT: &str = "qd_actor_trajectories_sent_total";
pub const TRAJECTORIES_ACKNOWLEDGED: &str = "qd_actor_trajectories_acknowledged_total";
pub const TRAJECTORIES_DECLINED: &str = "qd_actor_trajectories_declined_total";
pub const TRAJECTORIES_UNACKNOWLEDGED: &str = "qd_actor_trajectories_unacknowledged_total";
pub const BATCHES_SENT: &str = "qd_actor_batches_sent_total";
pub const BATCHES_DROPPED: &str = "qd_actor_batches_dropped_total";
pub const LEARNER_QUEUE_DEPTH: &str = "qd_actor_learner_queue_depth";

pub const EVAL_VERSION: &str = "qd_evaluator_version";
pub const EVAL_STEP: &str = "qd_evaluator_step";
pub const EVAL_QUALITY: &str = "qd_evaluator_quality_ratio";
pub const EVAL_ADHERENCE: &str = "qd_evaluator_adherence_ratio";
pub const EVAL_VALIDITY: &str = "qd_evaluator_validity_ratio";
pub const EVAL_EMBED_DIVERSITY: &str = "qd_evaluator_embed_diversity";
pub const EVAL_EDIT_DIVERSITY: &str = "qd_evaluator_edit_diversity_ratio";
pub const EVAL_TOKENS: &str = "qd_evaluator_tokens_total";
pub const EVAL_SECONDS: &str = "qd_evaluator_duration_seconds";
pub const EVAL_RUNS: &str = "qd_evaluator_evaluations_total";

/// The actor's rollouts.
pub const ROLLOUT: &[Metric] = &[
    Metric::counter(TOKENS, "tokens generated"),
    Metric::histogram(
        ROLLOUT_SECONDS,
        "time of one rollout (sampling and embedding)",
        &[0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
    ),
    Metric::histogram(
        REWARD,
        "pair diversity rewards",
        &[0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0],
    ),
    Metric::gauge(REWARD_MEAN, "mean reward of the last rollout"),
    Metric::counter(TRAJECTORIES_SENT, "trajectories sent to the learner"),
    Metric::counter(
        TRAJECTORIES_ACKNOWLEDGED,
        "trajectories the learner acknowledged as queued",
    ),
    Metric::counter(
        TRAJECTORIES_DECLINED,
        "trajectories the learner acknowledged but did not queue (too stale, or sent before)",
    ),
    Metric::counter(
        TRAJECTORIES_UNACKNOWLEDGED,
        "trajectories in batches never acknowledged (lost with a connection, or refused)",
    ),
    Metric::counter(BATCHES_SENT, "batches sent to the learner"),
    Metric::counter(BATCHES_DROPPED, "batches not sent, by reason")
        .labelled("reason", &["version_ahead"]),
    Metric::gauge(
        LEARNER_QUEUE_DEPTH,
        "the learner's queue depth in its last acknowledgement",
    ),
];

/// The evaluator's scores of the newest version.
pub const EVAL: &[Metric] = &[
    Metric::gauge(
        EVAL_VERSION,
        "policy version the evaluation gauges belong to",
    ),
    Metric::gauge(EVAL_STEP, "learner step the evaluation gauges belong to"),
    Metric::gauge(EVAL_QUALITY, "mean judge score (adherence x validity)"),
    Metric::gauge(EVAL_ADHERENCE, "mean prompt adherence"),
    Metric::gauge(
        EVAL_VALIDITY,
        "mean validity (in the folk task, bar validity)",
    ),
    Metric::gauge(
        EVAL_EMBED_DIVERSITY,
        "mean 1 - cos between samples of the same prompt",
    ),
    Metric::gauge(
        EVAL_EDIT_DIVERSITY,
        "mean normalised edit distance between samples of the same prompt",
    ),
    Metric::counter(EVAL_TOKENS, "tokens generated by the evaluations"),
    Metric::gauge(EVAL_SECONDS, "duration of the last evaluation"),
    Metric::counter(EVAL_RUNS, "evaluations done"),
];

/// The actor's catalogue.
pub fn actor() -> Vec<Metric> {
    [&ACTOR_CLIENT.catalogue()[..], ROLLOUT].concat()
}

/// The evaluator's catalogue.
pub fn evaluator() -> Vec<Metric> {
    [&EVALUATOR_CLIENT.catalogue()[..], EVAL].concat()
}
