//! The service roles' arguments: the configuration they read (`--config`, `--set`),
//! `qd config`, `qd health` and `qd tls`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use common::settings::Settings;

use crate::health;

/// The configuration of a service role.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// TOML file layered over the built-in defaults (see configs/).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override one setting, e.g. `--set learner.beta=5` (repeatable; wins over the file
    /// and the QD__SECTION__KEY environment).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    /// Write this process's endpoints (pid, gRPC and metrics addresses) as JSON here once
    /// it listens (learner, actor, evaluator; the learner also writes
    /// `run_dir/endpoints.json`).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Print the configuration reference instead: every key of every section with its
    /// type, unit, built-in default and meaning, as markdown.
    #[arg(long, conflicts_with_all = ["config", "set"])]
    pub reference: bool,
}

impl ServiceArgs {
    pub fn settings(&self) -> Result<Settings> {
        Settings::load(self.config.as_deref(), &self.set)
    }
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// `host:port` or `grpc://host:port` (grpc.health.v1), or `http://host:port/path`
    /// (must answer 200).
    pub target: health::Target,
    /// gRPC service to ask about ("" is the whole server).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// For `grpcs://`: the CA (PEM) the learner's certificate must chain to.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// For `grpcs://`: the name expected in the learner's certificate (default: the
    /// target's host).
    #[arg(long)]
    pub domain: Option<String>,
    /// For `grpcs://` against a learner that wants mutual TLS: a client certificate
    /// (PEM)…
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// …and its key.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Write a private CA, the learner's certificate (for the given names, `localhost`
    /// and 127.0.0.1) and a client certificate for mutual TLS into a folder: ca.pem,
    /// learner.pem, client.pem and their keys (readable by their owner only). A folder
    /// that already holds a set is left as it is.
    Init {
        /// The folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Host names or IP addresses clients reach the learner by (repeatable).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
}
