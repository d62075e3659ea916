//! The actor's and the evaluator's metrics: every name, its help text, histogram buckets
//! and how it starts. Both roles hold weights ([`CLIENT`]); the actor adds [`ROLLOUT`],
//! the evaluator [`EVAL`]. docs/metrics.md documents the same set (a test holds them
//! equal).

use common::telemetry::Metric;

pub const WEIGHT_VERSION: &str = "qd_actor_weight_version";
pub const WEIGHT_SYNC_SECONDS: &str = "qd_actor_weight_sync_seconds";
pub const WEIGHT_SYNC_BYTES: &str = "qd_actor_weight_sync_bytes_total";
pub const RECONNECTS: &str = "qd_actor_reconnects_total";
pub const VERSIONS_REFUSED: &str = "qd_actor_versions_refused_total";

pub const TOKENS: &str = "qd_actor_tokens_total";
pub const TOKENS_PER_SECOND: &str = "qd_actor_tokens_per_second";
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

pub const EVAL_VERSION: &str = "qd_eval_version";
pub const EVAL_STEP: &str = "qd_eval_step";
pub const EVAL_QUALITY: &str = "qd_eval_quality";
pub const EVAL_ADHERENCE: &str = "qd_eval_adherence";
pub const EVAL_VALIDITY: &str = "qd_eval_validity";
pub const EVAL_EMBED_DIVERSITY: &str = "qd_eval_embed_diversity";
pub const EVAL_EDIT_DIVERSITY: &str = "qd_eval_edit_diversity";
pub const EVAL_TOKENS_PER_SECOND: &str = "qd_eval_tokens_per_second";
pub const EVAL_SECONDS: &str = "qd_eval_seconds";
pub const EVAL_RUNS: &str = "qd_eval_runs_total";

/// What every client of the learner exports.
pub const CLIENT: &[Metric] = &[
    Metric::gauge(WEIGHT_VERSION, "policy version the client holds"),
    Metric::histogram(
        WEIGHT_SYNC_SECONDS,
        "first weight chunk received to weights loaded",
        &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
    ),
    Metric::counter(WEIGHT_SYNC_BYTES, "weight bytes received"),
    Metric::counter(
        VERSIONS_REFUSED,
        "versions received whole that could not be loaded (kept the weights held)",
    ),
    Metric::counter(
        RECONNECTS,
        "lost connections to the learner (each retried with back-off)",
    ),
];

/// The actor's rollouts.
pub const ROLLOUT: &[Metric] = &[
    Metric::counter(TOKENS, "tokens generated"),
    Metric::gauge(TOKENS_PER_SECOND, "generation speed of the last rollout"),
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
    Metric::gauge(
        EVAL_TOKENS_PER_SECOND,
        "generation speed during the evaluation",
    ),
    Metric::gauge(EVAL_SECONDS, "duration of the evaluation"),
    Metric::counter(EVAL_RUNS, "evaluations done"),
];

/// The actor's catalogue.
pub fn actor() -> Vec<Metric> {
    [CLIENT, ROLLOUT].concat()
}

/// The evaluator's catalogue.
pub fn evaluator() -> Vec<Metric> {
    [CLIENT, EVAL].concat()
}
