//! The service's configuration: built-in defaults ← a TOML file (`--config`) ← the
//! environment (`QD__SECTION__KEY`, e.g. `QD__LEARNER__BETA=5`) ← command-line
//! overrides (`--set learner.beta=5`). Unknown keys and invalid values fail at start-up
//! with a message that names the key.
//!
//! Each section's fields, defaults and checks sit side by side in its own file
//! (`learner.rs`; `client.rs` for `[client]`, `[auth]`, `[limits]`; `actor.rs` for
//! `[actor]`, `[evaluator]`; the small ones here), so that a key's default and its check
//! are read and changed together; [`Settings::validate`] adds the checks across sections.

mod actor;
mod client;
mod learner;
mod reference;

use std::fmt::Display;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use config::{Config, Environment, File, FileFormat};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use actor::{ActorSettings, EvaluatorSettings};
pub use client::{
    AuthSettings, ClientSettings, LimitSettings, MIN_TOKEN_BYTES, PLACEHOLDER_TOKENS,
};
pub use learner::{Baseline, Divergence, GradClip, LearnerSettings};
pub use reference::reference;

/// Every setting of every role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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

/// `qd run`: every role as local processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// Actor processes to start.
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

    /// Checks values serde cannot, section by section and across sections; the error
    /// names every key at fault.
    pub fn validate(&self) -> Result<()> {
        let mut c = Checks::default();
        self.learner.validate(&mut c);
        self.client.validate(&mut c);
        self.actor.validate(&mut c);
        self.evaluator.validate(&mut c);
        self.limits.validate(&mut c);
        self.auth.validate(&mut c);
        c.positive("run.actors", self.run.actors as u64);
        // Across sections.
        c.check(
            self.client.max_message_bytes >= self.learner.chunk_bytes + 4096,
            "client.max_message_bytes",
            "must hold one weight chunk (learner.chunk_bytes)",
            self.client.max_message_bytes,
        );
        c.check(
            !self.client.learner.starts_with("https://") || !self.auth.tls_ca.is_empty(),
            "auth.tls_ca",
            "must name the CA certificate when client.learner is https://",
            format!("{:?}", self.auth.tls_ca),
        );
        c.check(
            self.auth.tls_ca.is_empty() || self.client.learner.starts_with("https://"),
            "client.learner",
            "must be https:// when auth.tls_ca is set (over http:// nothing is verified and the token travels in plaintext)",
            format!("{:?}", self.client.learner),
        );
        if !c.0.is_empty() {
            bail!("invalid configuration: {}", c.0.join("; "));
        }
        Ok(())
    }
}

/// What is wrong with a configuration, key by key.
#[derive(Debug, Default)]
pub(crate) struct Checks(Vec<String>);

impl Checks {
    /// Notes `key` unless `ok`: "`key` `what` (got `value`)".
    pub(crate) fn check(&mut self, ok: bool, key: &str, what: &str, value: impl Display) {
        if !ok {
            self.0.push(format!("{key} {what} (got {value})"));
        }
    }

    /// A count or an interval: at least 1.
    pub(crate) fn positive(&mut self, key: &str, v: u64) {
        self.check(v >= 1, key, "must be at least 1", v);
    }

    /// `host:port` with an IP host.
    pub(crate) fn address(&mut self, key: &str, v: &str) {
        let ok = v.parse::<std::net::SocketAddr>().is_ok();
        self.check(
            ok,
            key,
            "must be host:port with an IP host",
            format!("{v:?}"),
        );
    }

    /// A `/metrics` address: empty (off) or `host:port` with an IP host.
    pub(crate) fn metrics_address(&mut self, key: &str, v: &str) {
        let ok = v.is_empty() || v.parse::<std::net::SocketAddr>().is_ok();
        let what = "must be empty or host:port with an IP host";
        self.check(ok, key, what, format!("{v:?}"));
    }

    /// `cpu`, `cuda` or `cuda:N`.
    pub(crate) fn device(&mut self, key: &str, v: &str) {
        let ok = model::device::parse_device(v).is_ok();
        self.check(ok, key, "must be cpu, cuda or cuda:N", format!("{v:?}"));
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
