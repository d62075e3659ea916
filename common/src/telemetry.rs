//! Logs and metrics every process shares: `tracing` to stderr as text or JSON, and a
//! Prometheus `/metrics` endpoint serving a role's metric catalogue (each role keeps its
//! own in its `metrics` module; names `qd_…`, listed in docs/metrics.md).

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

/// What a metric is, for its catalogue entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Counter,
    Gauge,
    /// With its bucket bounds.
    Histogram(&'static [f64]),
}

/// One metric of a role's catalogue: the one place that names it, says what it means
/// (Prometheus `# HELP`), gives histogram buckets, and says how it starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// The metric's label and the values it is exported with at 0 from the start, so that
    /// dashboards read "none" as 0 and Prometheus sees the first increase. Counters
    /// without a label start at 0 too; gauges without one appear when first set.
    pub label: Option<(&'static str, &'static [&'static str])>,
}

impl Metric {
    pub const fn counter(name: &'static str, help: &'static str) -> Metric {
        Metric {
            name,
            kind: Kind::Counter,
            help,
            label: None,
        }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Metric {
        Metric {
            name,
            kind: Kind::Gauge,
            help,
            label: None,
        }
    }

    pub const fn histogram(
        name: &'static str,
        help: &'static str,
        buckets: &'static [f64],
    ) -> Metric {
        Metric {
            name,
            kind: Kind::Histogram(buckets),
            help,
            label: None,
        }
    }

    /// The same metric with a label whose values start at 0.
    pub const fn labelled(self, label: &'static str, values: &'static [&'static str]) -> Metric {
        Metric {
            label: Some((label, values)),
            ..self
        }
    }
}

/// Describes every metric of `catalogue` to the installed recorder and exports the ones
/// that start at 0.
pub fn register(catalogue: &[Metric]) {
    for m in catalogue {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram(_) => metrics::describe_histogram!(m.name, m.help),
        }
        match (m.kind, m.label) {
            (Kind::Counter, None) => metrics::counter!(m.name).absolute(0),
            (Kind::Counter, Some((label, values))) => {
                for &v in values {
                    metrics::counter!(m.name, label => v).absolute(0);
                }
            }
            (Kind::Gauge, Some((label, values))) => {
                for &v in values {
                    metrics::gauge!(m.name, label => v).set(0.0);
                }
            }
            (Kind::Gauge | Kind::Histogram(_), _) => {}
        }
    }
}

/// Installs the Prometheus recorder for the metrics of `catalogue` (buckets, help texts,
/// initial zeroes) and serves `/metrics` on `listen` (port 0: any free port). Returns
/// the bound address, or `None` when `listen` is empty. Needs a tokio runtime.
pub async fn serve_metrics(
    listen: &str,
    catalogue: &[Metric],
    run: &str,
) -> Result<Option<SocketAddr>> {
    if listen.is_empty() {
        return Ok(None);
    }
    let handle = install_recorder(catalogue, run)?;
    register(catalogue);
    // The process's CPU time, memory, threads and open files (process_*), read on
    // every scrape.
    let process = metrics_process::Collector::default();
    process.describe();
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
            process.collect();
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

/// The recorder: every series labelled `run`, histograms with their catalogue's buckets.
fn install_recorder(catalogue: &[Metric], run: &str) -> Result<PrometheusHandle> {
    let mut b = PrometheusBuilder::new().add_global_label("run", run);
    for m in catalogue {
        if let Kind::Histogram(buckets) = m.kind {
            b = b
                .set_buckets_for_metric(Matcher::Full(m.name.to_string()), buckets)
                .context("histogram buckets")?;
        }
    }
    b.install_recorder()
        .context("installing the Prometheus recorder")
}

/// The value of the sample `name` whose labels include `labels` on the Prometheus page
/// served at `addr` (`None`: no such sample, or no page within 2 s). For checks of a
/// running service (the fault campaign, the tests).
pub fn scrape(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (_, page) = response.split_once("\r\n\r\n")?;
    sample(page, name, labels)
}

/// [`scrape`] on a page already read.
pub fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use prometheus_parse::Value;
    let parsed = prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_string()))).ok()?;
    parsed
        .samples
        .into_iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
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

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn a_sample_is_found_by_name_and_a_subset_of_its_labels() {
        let page = "# HELP qd_x_total things\n# TYPE qd_x_total counter\n\
                    qd_x_total{reason=\"a\",run=\"r1\"} 3\nqd_x_total{reason=\"b\",run=\"r1\"} 5\n\
                    # TYPE qd_y gauge\nqd_y{run=\"r1\"} 0.25\n";
        assert_eq!(sample(page, "qd_x_total", &[("reason", "b")]), Some(5.0));
        assert_eq!(
            sample(page, "qd_x_total", &[("run", "r1"), ("reason", "a")]),
            Some(3.0)
        );
        assert_eq!(sample(page, "qd_y", &[]), Some(0.25));
        assert_eq!(sample(page, "qd_x_total", &[("reason", "c")]), None);
        assert_eq!(sample(page, "qd_z", &[]), None);
    }
}
