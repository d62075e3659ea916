//! Logs and metrics every process shares: `tracing` to stderr as text or JSON, and a
//! Prometheus `/metrics` endpoint (metric names `qd_…`, listed in docs/metrics.md).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::settings::LogFormat;

/// Installs the global `tracing` subscriber (`RUST_LOG` overrides `level`). Colours only
/// when stderr is a terminal, so log files stay plain.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // A second call (tests run several roles in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Histogram buckets of the metrics that are histograms (the rest are gauges and
/// counters).
const BUCKETS: &[(&str, &[f64])] = &[
    (
        "qd_learner_staleness",
        &[0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0],
    ),
    (
        "qd_learner_step_seconds",
        &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
    ),
    (
        "qd_learner_publish_seconds",
        &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
    ),
    (
        "qd_actor_reward",
        &[0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0],
    ),
    (
        "qd_actor_rollout_seconds",
        &[0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
    ),
    (
        "qd_actor_weight_sync_seconds",
        &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
    ),
];

/// Installs the Prometheus recorder and serves `/metrics` on `listen` (port 0: any free
/// port). Returns the bound address, or `None` when `listen` is empty. Needs a tokio
/// runtime.
pub async fn serve_metrics(listen: &str) -> Result<Option<SocketAddr>> {
    if listen.is_empty() {
        return Ok(None);
    }
    let handle = install_recorder()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics endpoint to {listen}"))?;
    let addr = listener.local_addr()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let h = handle.clone();
            async move { h.render() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(Some(addr))
}

fn install_recorder() -> Result<PrometheusHandle> {
    let mut b = PrometheusBuilder::new();
    for (name, buckets) in BUCKETS {
        b = b
            .set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
            .context("histogram buckets")?;
    }
    b.install_recorder()
        .context("installing the Prometheus recorder")
}

/// Where a started process can be reached: written as JSON to its ready file (the
/// learner's is `run_dir/endpoints.json`), so scripts and tests need no fixed ports.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Endpoints {
    pub pid: u32,
    pub grpc: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

impl Endpoints {
    /// Writes the endpoints atomically to `path`.
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        model::fsutil::write_atomic(path, &serde_json::to_vec_pretty(self)?)
    }

    /// Reads a ready file.
    pub fn read(path: &std::path::Path) -> Result<Endpoints> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an endpoints file", path.display()))
    }
}
