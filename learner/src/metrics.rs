//! The learner's metrics: every name, its help text, histogram buckets and how it
//! starts, in one catalogue ([`ALL`]); docs/metrics.md documents the same set (a test
//! holds them equal).

use common::telemetry::Metric;

pub const STEP: &str = "qd_learner_step";
pub const VERSION: &str = "qd_learner_version";
pub const LOSS: &str = "qd_learner_loss";
pub const DISTILL_LOSS: &str = "qd_learner_distill_loss";
pub const PG_LOSS: &str = "qd_learner_pg_loss";
pub const KL: &str = "qd_learner_kl";
pub const ENTROPY: &str = "qd_learner_entropy";
pub const REWARD_MEAN: &str = "qd_learner_reward_mean";
pub const REWARD_STD: &str = "qd_learner_reward_std";
pub const BASELINE: &str = "qd_learner_baseline";
pub const GRAD_NORM: &str = "qd_learner_grad_norm";
pub const GRAD_NORM_DISTILL: &str = "qd_learner_grad_norm_distill";
pub const GRAD_NORM_PG: &str = "qd_learner_grad_norm_pg";
pub const CLIPPED_PAIRS: &str = "qd_learner_clipped_pairs_ratio";
pub const PAIR_WEIGHT_MEAN: &str = "qd_learner_pair_weight_mean";
pub const PAIR_WEIGHT_MIN: &str = "qd_learner_pair_weight_min";
pub const PAIR_WEIGHT_ESS: &str = "qd_learner_pair_weight_ess_ratio";
pub const LR: &str = "qd_learner_learning_rate";
pub const SAMPLES: &str = "qd_learner_samples_total";
pub const STEP_SECONDS: &str = "qd_learner_step_seconds";
pub const PUBLISH_SECONDS: &str = "qd_learner_publish_seconds";
pub const PUBLISH_BYTES: &str = "qd_learner_publish_bytes";
pub const STALENESS: &str = "qd_learner_staleness_versions";
pub const QUEUE_DEPTH: &str = "qd_learner_queue_depth";
pub const CLIENTS_CONNECTED: &str = "qd_learner_clients_connected";
pub const ACCEPTED: &str = "qd_learner_trajectories_accepted_total";
pub const DROPPED: &str = "qd_learner_trajectories_dropped_total";
pub const REFUSED: &str = "qd_learner_registrations_refused_total";
pub const UNAUTHENTICATED: &str = "qd_learner_unauthenticated_total";
pub const STREAMS_REFUSED: &str = "qd_learner_streams_refused_total";
pub const CONNECTIONS: &str = "qd_learner_connections";
pub const FINISHED: &str = "qd_learner_finished";
pub const RUN_INFO: &str = "qd_learner_run_info";
pub const WRITE_FAILURES: &str = "qd_learner_write_failures_total";

/// The files whose failed writes are counted (training goes on without them).
pub const WRITTEN_FILES: [&str; 2] = ["train.jsonl", "checkpoint"];

/// Why a call or a connection is refused by the stream plane's rules and limits.
pub const STREAM_REFUSALS: [&str; 12] = [
    "unregistered",
    "watcher_limit",
    "client_watch_limit",
    "push_limit",
    "client_push_limit",
    "idle",
    "connection_limit",
    "address_limit",
    "evicted_silent",
    "handshake_timeout",
    "stalled_watcher",
    "unread_acks",
];

/// Why a client is refused at `Register`: a field over its size limit, or the first
/// way it is incompatible with the learner.
pub const REGISTRATION_REFUSALS: [&str; 5] =
    ["oversize", "protocol", "model_config", "vocabulary", "role"];

/// Why trajectories are dropped: stale (at intake or in the queue), the trainer's
/// non-finite steps, a message that does not decode, then validation's (every reason
/// `validate::reject` gives; each is exported at 0 from the start).
pub const DROP_REASONS: [&str; 14] = [
    "stale",
    "non_finite_loss",
    "non_finite_gradient",
    "malformed",
    "duplicate",
    "empty",
    "oversize",
    "version",
    "unknown_prompt",
    "reward",
    "samples",
    "length",
    "token",
    "logprob",
];

pub const ALL: &[Metric] = &[
    Metric::gauge(STEP, "training steps taken"),
    Metric::gauge(VERSION, "newest published policy version"),
    Metric::gauge(LOSS, "L_distill + beta * L_pg of the last step"),
    Metric::gauge(
        DISTILL_LOSS,
        "L_distill with the configured divergence (sum over tokens, mean over prompts)",
    ),
    Metric::gauge(PG_LOSS, "L_pg of the last step, before beta"),
    Metric::gauge(
        KL,
        "KL(student || CFG teacher) per token, whatever divergence trains",
    ),
    Metric::gauge(ENTROPY, "student entropy per token"),
    Metric::gauge(REWARD_MEAN, "mean diversity reward of the last batch"),
    Metric::gauge(
        REWARD_STD,
        "standard deviation of the diversity reward of the last batch",
    ),
    Metric::gauge(
        BASELINE,
        "reward baseline subtracted in the policy-gradient term",
    ),
    Metric::gauge(GRAD_NORM, "global gradient norm before clipping"),
    Metric::gauge(
        GRAD_NORM_DISTILL,
        "gradient norm of L_distill alone, before clipping",
    ),
    Metric::gauge(
        GRAD_NORM_PG,
        "gradient norm of beta * L_pg alone, before clipping (0 at beta = 0)",
    ),
    Metric::gauge(
        CLIPPED_PAIRS,
        "share of pairs whose importance ratio exceeded rho_bar",
    ),
    Metric::gauge(
        PAIR_WEIGHT_MEAN,
        "mean truncated importance weight min(rho_bar, ratio) of the last batch's pairs",
    ),
    Metric::gauge(
        PAIR_WEIGHT_MIN,
        "smallest truncated importance weight of the last batch's pairs",
    ),
    Metric::gauge(
        PAIR_WEIGHT_ESS,
        "effective sample size of the pair weights as a share of the pairs, (sum w)^2 / (n sum w^2)",
    ),
    Metric::gauge(LR, "learning rate of the last step"),
    Metric::counter(SAMPLES, "samples trained on"),
    Metric::histogram(
        STEP_SECONDS,
        "compute time of a step (forward, backward, update)",
        &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
    ),
    Metric::histogram(
        PUBLISH_SECONDS,
        "time to serialise and publish a version",
        &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
    ),
    Metric::gauge(PUBLISH_BYTES, "size of the published weights"),
    Metric::histogram(
        STALENESS,
        "current version minus trajectory version of each trajectory taken from the queue",
        &[0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0],
    ),
    Metric::gauge(QUEUE_DEPTH, "trajectories waiting in the queue"),
    Metric::gauge(CLIENTS_CONNECTED, "clients with an open weight stream, by role")
        .labelled("role", &["actor", "evaluator"]),
    Metric::counter(ACCEPTED, "trajectories queued"),
    Metric::counter(DROPPED, "trajectories not trained on, by reason")
        .labelled("reason", &DROP_REASONS),
    Metric::counter(REFUSED, "clients refused at Register, by reason")
        .labelled("reason", &REGISTRATION_REFUSALS),
    Metric::counter(UNAUTHENTICATED, "calls without the right bearer token"),
    Metric::counter(
        STREAMS_REFUSED,
        "calls and connections refused by the stream limits, by reason",
    )
    .labelled("reason", &STREAM_REFUSALS),
    Metric::gauge(CONNECTIONS, "open TCP connections to the gRPC port"),
    Metric::counter(
        WRITE_FAILURES,
        "failed writes of the training log or a checkpoint (training went on), by file",
    )
    .labelled("file", &WRITTEN_FILES),
    Metric::gauge(
        RUN_INFO,
        "1, labelled with the run's method settings (beta, cfg_gamma, cfg_scope, cfg_plausibility, divergence)",
    ),
    Metric::gauge(
        FINISHED,
        "1 once the run has reached its step budget (the learner is telling its clients)",
    ),
];
