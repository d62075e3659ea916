//! The service's configuration: built-in defaults ← a TOML file (`--config`) ← the
//! environment (`QD__SECTION__KEY`, e.g. `QD__LEARNER__BETA=5`) ← command-line
//! overrides (`--set learner.beta=5`). Unknown keys and invalid values fail at start-up
//! with a message that names the key.
//!
//! One file on purpose: every section's fields, their defaults and their validation sit
//! side by side, so that a key's default and its check are read (and changed) together.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use config::{Config, Environment, File, FileFormat};
use model::sampling::CfgScope;
use model::task::Split;
use serde::{Deserialize, Serialize};

/// Every setting of every role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub paths: Paths,
    pub learner: LearnerSettings,
    pub client: ClientSettings,
    pub actor: ActorSettings,
    pub evaluator: EvaluatorSettings,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    pub run: RunSettings,
    pub log: LogSettings,
}

/// Where the inputs and outputs live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// The prepared dataset (`qd data prepare`).
    pub data: PathBuf,
    /// The pretrained policy: the frozen teacher and the student's starting point.
    pub base: PathBuf,
    /// The frozen diversity embedder.
    pub embedder: PathBuf,
    /// The quality judge (the evaluator's only).
    pub judge: PathBuf,
    /// The learner's checkpoints, training log and endpoints file.
    pub run_dir: PathBuf,
}

impl Paths {
    /// The run's name: its folder's (the `run` label of every metric).
    pub fn run_name(&self) -> String {
        self.run_dir
            .file_name()
            .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned())
    }
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            data: "data/folk".into(),
            base: "runs/pretrain/last.safetensors".into(),
            embedder: "runs/embedder.safetensors".into(),
            judge: "runs/judge.safetensors".into(),
            run_dir: "runs/rl/default".into(),
        }
    }
}

/// The divergence between student and CFG teacher in the distillation term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    None,
    BatchMean,
    Ema,
}

/// `qd learner`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    pub baseline: Baseline,
    /// Decay of the EMA baseline.
    pub ema_decay: f64,
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub grad_clip: f64,
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
    /// together (at most one chunk per subscriber is held while being sent).
    pub chunk_bytes: usize,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// libtorch threads (0: all cores).
    pub threads: usize,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
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
            max_staleness: 4,
            rho_bar: 1.0,
            publish_every: 1,
            checkpoint_every: 25,
            keep_checkpoints: 3,
            max_steps: 150,
            finish_grace_s: 30,
            queue_capacity: 16,
            chunk_bytes: 16 << 20,
            max_message_bytes: 64 << 20,
            threads: 0,
            device: "cpu".into(),
            seed: 0,
        }
    }
}

/// How actors and evaluators reach the learner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// The learner's gRPC endpoint.
    pub learner: String,
    /// First reconnection delay; doubles up to `backoff_max_ms`, with jitter.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Timeout of one connection attempt.
    pub connect_timeout_ms: u64,
    /// HTTP/2 keepalive ping interval (and TCP keepalive); a learner that does not
    /// answer a ping within twice this is taken as gone and the client reconnects.
    pub keepalive_s: u64,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
}

impl Default for ClientSettings {
    fn default() -> ClientSettings {
        ClientSettings {
            learner: "http://127.0.0.1:50051".into(),
            backoff_initial_ms: 200,
            backoff_max_ms: 2_000,
            connect_timeout_ms: 5_000,
            keepalive_s: 10,
            max_message_bytes: 64 << 20,
        }
    }
}

/// `qd actor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorSettings {
    /// Prompts per rollout (two samples each).
    pub batch_prompts: usize,
    pub max_new_tokens: usize,
    /// Prometheus `/metrics` address ("" to disable).
    pub metrics_listen: String,
    /// Shown in the learner's logs (default: host name and process id).
    pub name: String,
    pub threads: usize,
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    pub max_new_tokens: usize,
    /// Prometheus `/metrics` address ("" to disable).
    pub metrics_listen: String,
    pub threads: usize,
    pub device: String,
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
            threads: 0,
            device: "cpu".into(),
            seed: 7,
        }
    }
}

/// Optional bearer-token authentication of every RPC, and optional TLS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The shared token ("" disables authentication): at least 16 bytes, e.g.
    /// `openssl rand -hex 32`. Prefer `token_file` or `QD__AUTH__TOKEN` to writing it
    /// in a config file.
    pub token: String,
    /// A file holding the token (read at start-up when `token` is empty; surrounding
    /// whitespace ignored): a mounted Kubernetes Secret, or the one compose's bootstrap
    /// generates.
    pub token_file: String,
    /// Let a learner without a token listen on a non-loopback address: any client that
    /// reaches the port can then register, push trajectories and read the weights.
    /// Without it, such a learner refuses to start.
    pub insecure: bool,
    /// The learner's TLS certificate chain (PEM); with `tls_key`, it serves TLS only.
    pub tls_cert: String,
    /// The learner's TLS private key (PEM).
    pub tls_key: String,
    /// The CA certificate (PEM) clients verify the learner with; needed for an
    /// `https://` `client.learner`.
    pub tls_ca: String,
    /// The name clients expect in the learner's certificate (default: the host of
    /// `client.learner`).
    pub tls_domain: String,
}

/// What the learner lets its clients make it hold: connections, streams, time. Every
/// client is treated as possibly hostile; an honest actor uses one connection with one
/// weight stream and one trajectory stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Open TCP connections; further ones are closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (calls) per connection.
    pub max_streams_per_connection: u32,
    /// Open `WatchWeights` streams, all clients together (RESOURCE_EXHAUSTED beyond).
    pub max_watchers: usize,
    /// Open `PushTrajectories` streams, all clients together.
    pub max_push_streams: usize,
    /// Open `PushTrajectories` streams per registered client id.
    pub max_push_streams_per_client: usize,
    /// A trajectory stream that sends nothing for this long is ended (DEADLINE_EXCEEDED).
    pub idle_push_timeout_s: u64,
    /// HTTP/2 keepalive ping interval (server and clients); a peer that does not answer
    /// within twice this is dropped. TCP keepalive uses the same interval.
    pub keepalive_s: u64,
    /// Time limit for a unary call and for a stream's response to start.
    pub request_timeout_s: u64,
}

impl Default for LimitSettings {
    fn default() -> LimitSettings {
        LimitSettings {
            max_connections: 512,
            max_streams_per_connection: 16,
            max_watchers: 128,
            max_push_streams: 128,
            max_push_streams_per_client: 2,
            idle_push_timeout_s: 300,
            keepalive_s: 10,
            request_timeout_s: 30,
        }
    }
}

/// Tokens that were ever shipped as examples: refused, since anyone can read them.
pub const PLACEHOLDER_TOKENS: &[&str] = &["replace-me-with-a-random-token"];

/// The shortest token accepted.
pub const MIN_TOKEN_BYTES: usize = 16;

impl AuthSettings {
    /// Reads `token_file` into `token` when the token is not given directly.
    fn resolve(&mut self) -> Result<()> {
        if self.token.is_empty() && !self.token_file.is_empty() {
            let t = std::fs::read_to_string(&self.token_file)
                .with_context(|| format!("auth.token_file: reading {}", self.token_file))?;
            self.token = t.trim().to_string();
            anyhow::ensure!(
                !self.token.is_empty(),
                "auth.token_file: {} is empty",
                self.token_file
            );
        }
        Ok(())
    }
}

/// `qd run`: every role as local processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    pub actors: usize,
    /// Start the evaluator too.
    pub evaluator: bool,
}

impl Default for RunSettings {
    fn default() -> RunSettings {
        RunSettings {
            actors: 2,
            evaluator: true,
        }
    }
}

/// Log output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter (`RUST_LOG` wins when set).
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    /// Layers the sources: defaults ← `file` ← `QD__…` environment ← `overrides`
    /// (`section.key=value`), then validates.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Settings> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Settings::load_from(file, &env, overrides)
    }

    /// [`Settings::load`] with an explicit environment (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &[String],
    ) -> Result<Settings> {
        let mut b = Config::builder().add_source(
            Config::try_from(&Settings::default()).context("encoding the built-in defaults")?,
        );
        if let Some(f) = file {
            if !f.exists() {
                bail!("config file {} does not exist", f.display());
            }
            b = b.add_source(File::from(f).format(FileFormat::Toml).required(true));
        }
        let vars: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("QD__"))
            .cloned()
            .collect();
        b = b.add_source(
            Environment::with_prefix("QD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(vars)),
        );
        for o in overrides {
            let (key, value) = o
                .split_once('=')
                .with_context(|| format!("override {o:?} is not of the form section.key=value"))?;
            b = b.set_override(key.trim(), parse_scalar(value.trim()))?;
        }
        let settings: Settings = b
            .build()
            .context("reading the configuration")?
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let mut settings = settings;
        settings.auth.resolve()?;
        settings.validate()?;
        Ok(settings)
    }

    /// These settings with the token replaced by a mark of its length, for printing and
    /// for files (`qd config`, `run-config.toml`).
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        if !s.auth.token.is_empty() {
            s.auth.token = format!("<redacted: {} bytes>", s.auth.token.len());
        }
        s
    }

    /// Checks values serde cannot; the error names the key.
    pub fn validate(&self) -> Result<()> {
        let l = &self.learner;
        let mut bad: Vec<String> = Vec::new();
        let mut check = |ok: bool, key: &str, what: &str, value: String| {
            if !ok {
                bad.push(format!("{key} {what} (got {value})"));
            }
        };
        check(
            l.batch_prompts >= 1,
            "learner.batch_prompts",
            "must be at least 1",
            l.batch_prompts.to_string(),
        );
        check(
            l.beta.is_finite() && l.beta >= 0.0,
            "learner.beta",
            "must be a finite number ≥ 0",
            l.beta.to_string(),
        );
        check(
            (0.0..=1.0).contains(&l.cfg_plausibility),
            "learner.cfg_plausibility",
            "must be in [0, 1]",
            l.cfg_plausibility.to_string(),
        );
        check(
            l.cfg_gamma.is_finite() && l.cfg_gamma >= 0.0,
            "learner.cfg_gamma",
            "must be a finite number ≥ 0",
            l.cfg_gamma.to_string(),
        );
        check(
            l.jsd_alpha > 0.0 && l.jsd_alpha < 1.0,
            "learner.jsd_alpha",
            "must be in (0, 1)",
            l.jsd_alpha.to_string(),
        );
        check(
            (0.0..1.0).contains(&l.ema_decay),
            "learner.ema_decay",
            "must be in [0, 1)",
            l.ema_decay.to_string(),
        );
        check(
            l.lr.is_finite() && l.lr > 0.0,
            "learner.lr",
            "must be > 0",
            l.lr.to_string(),
        );
        check(
            l.weight_decay.is_finite() && l.weight_decay >= 0.0,
            "learner.weight_decay",
            "must be ≥ 0",
            l.weight_decay.to_string(),
        );
        check(
            l.grad_clip > 0.0,
            "learner.grad_clip",
            "must be > 0",
            l.grad_clip.to_string(),
        );
        check(
            l.rho_bar > 0.0,
            "learner.rho_bar",
            "must be > 0",
            l.rho_bar.to_string(),
        );
        check(
            l.publish_every >= 1,
            "learner.publish_every",
            "must be at least 1",
            l.publish_every.to_string(),
        );
        check(
            l.checkpoint_every >= 1,
            "learner.checkpoint_every",
            "must be at least 1",
            l.checkpoint_every.to_string(),
        );
        check(
            l.keep_checkpoints >= 1,
            "learner.keep_checkpoints",
            "must be at least 1",
            l.keep_checkpoints.to_string(),
        );
        check(
            l.queue_capacity >= l.batch_prompts,
            "learner.queue_capacity",
            "must hold at least one batch (learner.batch_prompts)",
            l.queue_capacity.to_string(),
        );
        check(
            l.chunk_bytes >= 1024 && l.chunk_bytes + 4096 <= l.max_message_bytes,
            "learner.chunk_bytes",
            "must be ≥ 1024 and fit in learner.max_message_bytes",
            l.chunk_bytes.to_string(),
        );
        check(
            l.listen.parse::<std::net::SocketAddr>().is_ok(),
            "learner.listen",
            "must be host:port with an IP host",
            format!("{:?}", l.listen),
        );
        for (key, v) in [
            ("learner.metrics_listen", &l.metrics_listen),
            ("actor.metrics_listen", &self.actor.metrics_listen),
            ("evaluator.metrics_listen", &self.evaluator.metrics_listen),
        ] {
            check(
                v.is_empty() || v.parse::<std::net::SocketAddr>().is_ok(),
                key,
                "must be empty or host:port with an IP host",
                format!("{v:?}"),
            );
        }
        for (key, v) in [
            ("learner.device", &l.device),
            ("actor.device", &self.actor.device),
            ("evaluator.device", &self.evaluator.device),
        ] {
            check(
                model::device::parse_device(v).is_ok(),
                key,
                "must be cpu, cuda or cuda:N",
                format!("{v:?}"),
            );
        }
        let c = &self.client;
        check(
            c.learner.starts_with("http://") || c.learner.starts_with("https://"),
            "client.learner",
            "must be an http:// or https:// URL",
            format!("{:?}", c.learner),
        );
        check(
            c.backoff_initial_ms >= 1 && c.backoff_initial_ms <= c.backoff_max_ms,
            "client.backoff_initial_ms",
            "must be ≥ 1 and ≤ client.backoff_max_ms",
            c.backoff_initial_ms.to_string(),
        );
        check(
            c.keepalive_s >= 1,
            "client.keepalive_s",
            "must be at least 1",
            c.keepalive_s.to_string(),
        );
        check(
            c.connect_timeout_ms >= 1,
            "client.connect_timeout_ms",
            "must be ≥ 1",
            c.connect_timeout_ms.to_string(),
        );
        check(
            c.max_message_bytes >= l.chunk_bytes + 4096,
            "client.max_message_bytes",
            "must hold one weight chunk (learner.chunk_bytes)",
            c.max_message_bytes.to_string(),
        );
        let a = &self.actor;
        check(
            a.batch_prompts >= 1,
            "actor.batch_prompts",
            "must be at least 1",
            a.batch_prompts.to_string(),
        );
        check(
            a.max_new_tokens >= 1,
            "actor.max_new_tokens",
            "must be at least 1",
            a.max_new_tokens.to_string(),
        );
        let e = &self.evaluator;
        check(
            e.every_versions >= 1,
            "evaluator.every_versions",
            "must be at least 1",
            e.every_versions.to_string(),
        );
        check(
            e.split != Split::Train,
            "evaluator.split",
            "must be a held-out split (val or test)",
            e.split.to_string(),
        );
        check(
            e.prompts >= 1,
            "evaluator.prompts",
            "must be at least 1",
            e.prompts.to_string(),
        );
        check(
            e.samples_per_prompt >= 2,
            "evaluator.samples_per_prompt",
            "must be at least 2",
            e.samples_per_prompt.to_string(),
        );
        check(
            e.max_new_tokens >= 1,
            "evaluator.max_new_tokens",
            "must be at least 1",
            e.max_new_tokens.to_string(),
        );
        let lim = &self.limits;
        for (key, v) in [
            ("limits.max_connections", lim.max_connections as u64),
            (
                "limits.max_streams_per_connection",
                u64::from(lim.max_streams_per_connection),
            ),
            ("limits.max_watchers", lim.max_watchers as u64),
            ("limits.max_push_streams", lim.max_push_streams as u64),
            (
                "limits.max_push_streams_per_client",
                lim.max_push_streams_per_client as u64,
            ),
            ("limits.idle_push_timeout_s", lim.idle_push_timeout_s),
            ("limits.keepalive_s", lim.keepalive_s),
            ("limits.request_timeout_s", lim.request_timeout_s),
        ] {
            check(v >= 1, key, "must be at least 1", v.to_string());
        }
        check(
            lim.max_streams_per_connection >= 3,
            "limits.max_streams_per_connection",
            "must allow an actor's three calls (Register, WatchWeights, PushTrajectories)",
            lim.max_streams_per_connection.to_string(),
        );
        check(
            self.run.actors >= 1,
            "run.actors",
            "must be at least 1",
            self.run.actors.to_string(),
        );
        let t = &self.auth;
        check(
            t.token.is_empty()
                || (t.token.len() >= MIN_TOKEN_BYTES
                    && !PLACEHOLDER_TOKENS.contains(&t.token.as_str())),
            "auth.token",
            "must be at least 16 bytes and not an example token (generate one: openssl rand -hex 32)",
            // Never the token itself.
            format!("{} bytes", t.token.len()),
        );
        check(
            t.tls_cert.is_empty() == t.tls_key.is_empty(),
            "auth.tls_key",
            "and auth.tls_cert must be set together",
            format!("{:?}", t.tls_key),
        );
        check(
            !c.learner.starts_with("https://") || !t.tls_ca.is_empty(),
            "auth.tls_ca",
            "must name the CA certificate when client.learner is https://",
            format!("{:?}", t.tls_ca),
        );
        if !bad.is_empty() {
            bail!("invalid configuration: {}", bad.join("; "));
        }
        Ok(())
    }
}

/// A command-line override's value: a bool or a number when it reads as one.
fn parse_scalar(v: &str) -> config::Value {
    if let Ok(b) = v.parse::<bool>() {
        return b.into();
    }
    if let Ok(i) = v.parse::<i64>() {
        return i.into();
    }
    if let Ok(f) = v.parse::<f64>() {
        return f.into();
    }
    v.to_string().into()
}
