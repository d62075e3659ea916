//! The actor role (rollouts of the current student, scored by the frozen embedder, sent
//! to the learner) and the evaluator role (an actor that sends nothing back and scores
//! new versions on held-out prompts). Both keep their connection to the learner alive
//! with [`link::maintain`], and do their compute on their own thread, swapping weights only
//! between rollouts.

pub mod broadcast;
pub mod client;
pub mod evaluator;
pub mod link;
pub mod metrics;
pub mod rollout;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use qd_proto::{Role, TrajectoryBatch};
use tch::nn::VarStore;
use tokio::sync::{mpsc, watch};

use common::settings::Settings;
use model::checkpoint::read_policy;
use model::config::ModelConfig;
use model::task::Task;
use model::transformer::Transformer;

use crate::metrics as m;
use broadcast::Weights;
use client::{Credentials, Identity};
use link::{maintain, Link, CREDITS};

/// The student as a client holds it: weights of one published version.
#[derive(Debug)]
pub struct Student {
    pub vs: VarStore,
    pub model: Transformer,
    pub version: u64,
    vocab_hash: String,
    /// The last version that could not be loaded: not tried again.
    refused: u64,
    /// The names its metrics go under (its role's).
    metrics: &'static m::Client,
}

impl Student {
    pub fn new(
        config: &ModelConfig,
        vocab_hash: &str,
        device: tch::Device,
        metrics: &'static m::Client,
    ) -> Student {
        let vs = VarStore::new(device);
        let model = Transformer::new(&vs.root(), config);
        Student {
            vs,
            model,
            version: 0,
            vocab_hash: vocab_hash.to_string(),
            refused: 0,
            metrics,
        }
    }

    /// Swaps in `w` if it is another version than the one held; true when it did. A
    /// version that cannot be loaded (damaged, another architecture or vocabulary) is
    /// counted, logged and skipped: the weights held stay (loading checks every tensor
    /// before it copies one), and the next version is tried in turn, so that a bad
    /// version cannot make clients crash-loop.
    pub fn update(&mut self, w: Option<&Arc<Weights>>) -> Result<bool> {
        let Some(w) = w.filter(|w| w.version != self.version && w.version != self.refused) else {
            return Ok(false);
        };
        let t0 = std::time::Instant::now();
        let loaded = w.checkpoint().map_err(anyhow::Error::from).and_then(|ck| {
            ck.check_compatible(&self.model.config, &self.vocab_hash)?;
            ck.load_into(&mut self.vs)?;
            Ok(())
        });
        if let Err(e) = loaded {
            self.refused = w.version;
            ::metrics::counter!(self.metrics.versions_refused).increment(1);
            tracing::error!(
                version = w.version,
                held = self.version,
                "weights version {} not loaded, keeping version {}: {e:#}",
                w.version,
                self.version
            );
            return Ok(false);
        }
        let sync_seconds = w.sync_seconds + t0.elapsed().as_secs_f64();
        ::metrics::gauge!(self.metrics.weight_version).set(w.version as f64);
        ::metrics::histogram!(self.metrics.weight_sync_seconds).record(sync_seconds);
        ::metrics::counter!(self.metrics.weight_sync_bytes).increment(w.blob.len() as u64);
        let first = self.version == 0;
        self.version = w.version;
        if first || w.version % 10 == 0 {
            tracing::info!(
                version = w.version,
                step = w.step,
                bytes = w.blob.len(),
                sync_s = format!("{sync_seconds:.3}"),
                "weights loaded"
            );
        } else {
            tracing::debug!(version = w.version, step = w.step, "weights loaded");
        }
        Ok(true)
    }
}

/// Blocks the compute thread until new weights arrive or `stop` is set; false on stop.
pub fn wait_for_weights(
    rt: &tokio::runtime::Handle,
    weights: &mut watch::Receiver<Option<Arc<Weights>>>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    rt.block_on(async {
        tokio::select! {
            r = weights.changed() => r.is_ok(),
            _ = stop.wait_for(|s| *s) => false,
        }
    })
}

/// The settings, task and base model a client starts from.
#[derive(Debug)]
pub struct Setup {
    pub settings: Settings,
    pub task: Arc<dyn Task>,
    pub model_config: ModelConfig,
    pub vocab_hash: String,
    pub device: tch::Device,
}

impl Setup {
    /// [`Setup::load`], then the `/metrics` endpoint and the ready file.
    pub async fn start(
        settings: Settings,
        task: Arc<dyn Task>,
        device: &str,
        threads: usize,
        metrics_listen: &str,
        catalogue: &[common::telemetry::Metric],
        ready_file: Option<&std::path::Path>,
    ) -> Result<(Setup, Option<std::net::SocketAddr>)> {
        let run = settings.paths.run_name();
        let setup = Setup::load(settings, task, device, threads)?;
        let metrics = common::telemetry::serve_metrics(metrics_listen, catalogue, &run).await?;
        if let Some(p) = ready_file {
            common::telemetry::Endpoints {
                pid: std::process::id(),
                grpc: None,
                metrics,
            }
            .write(p)?;
        }
        Ok((setup, metrics))
    }

    /// Reads the base model's architecture (what `Register` checks).
    pub fn load(
        settings: Settings,
        task: Arc<dyn Task>,
        device: &str,
        threads: usize,
    ) -> Result<Setup> {
        let device = model::device::use_device(model::device::parse_device(device)?, threads)?;
        let vocab_hash = task.vocab_hash();
        let base = read_policy(&settings.paths.base, task.as_ref())
            .context("reading the base model's architecture")?;
        Ok(Setup {
            model_config: base.meta.config.clone(),
            settings,
            task,
            vocab_hash,
            device,
        })
    }

    pub fn link(&self, role: Role, name: &str) -> Result<Link> {
        Ok(Link {
            settings: self.settings.client.clone(),
            credentials: Credentials::new(&self.settings.auth)?,
            identity: Identity {
                role,
                name: default_name(name, role),
                model_config: self.model_config.clone(),
                vocab_hash: self.vocab_hash.clone(),
            },
            weights: watch::channel(None).0,
            credits: Arc::new(tokio::sync::Semaphore::new(CREDITS)),
            finished: Arc::new(AtomicBool::new(false)),
            sent: Default::default(),
        })
    }
}

fn default_name(name: &str, role: Role) -> String {
    if !name.is_empty() {
        return name.to_string();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let role = if role == Role::Evaluator {
        "evaluator"
    } else {
        "actor"
    };
    format!("{role}@{host}:{}", std::process::id())
}

/// Runs a client until SIGTERM/Ctrl-C, a refusal by the learner, the end of the run
/// (`link.finished` is then set), or the end of its compute: `compute` runs on its own thread with the newest weights, a stop flag and the
/// runtime; the connection (which sends `batches`, for actors) runs here.
pub async fn run_client<F>(
    link: Link,
    mut batches: Option<mpsc::Receiver<TrajectoryBatch>>,
    compute: F,
) -> Result<()>
where
    F: FnOnce(
            watch::Receiver<Option<Arc<Weights>>>,
            watch::Receiver<bool>,
            tokio::runtime::Handle,
        ) -> Result<()>
        + Send
        + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let weights = link.weights.subscribe();
    let rt = tokio::runtime::Handle::current();
    let stop = stop_rx.clone();
    let mut computing = tokio::task::spawn_blocking(move || compute(weights, stop, rt));
    let outcome = tokio::select! {
        r = maintain(&link, batches.as_mut(), stop_rx) => r,
        _ = common::shutdown::termination() => Ok(()),
        // The compute thread ended by itself (an error, a panic): the client ends with
        // it rather than stay registered and connected doing nothing.
        c = &mut computing => {
            let _ = stop_tx.send(true);
            let computed = c.context("the compute thread died")?;
            return computed.context("the compute thread stopped");
        }
    };
    let _ = stop_tx.send(true);
    drop(batches);
    if link.identity.role == Role::Actor {
        let [sent, acknowledged, declined, unacknowledged] = link.sent.counts();
        tracing::info!(
            sent,
            acknowledged,
            declined,
            unacknowledged,
            "trajectories: sent = acknowledged + declined + unacknowledged"
        );
    }
    let computed = computing.await.context("the compute thread died")?;
    outcome.and(computed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::checkpoint::{serialize, ModelKind, Stamp};
    use model::config::Preset;

    fn weights(version: u64, blob: Vec<u8>) -> Arc<Weights> {
        Arc::new(Weights {
            version,
            step: version,
            blob: bytes::Bytes::from(blob),
            sync_seconds: 0.0,
        })
    }

    /// A checkpoint of a fresh model of `config` as the learner publishes it.
    fn blob(config: &ModelConfig, version: u64) -> Vec<u8> {
        let vs = VarStore::new(tch::Device::Cpu);
        let _m = Transformer::new(&vs.root(), config);
        let stamp = Stamp {
            kind: ModelKind::Policy,
            config,
            vocab_hash: "v",
            step: version,
            version,
            extra: serde_json::Value::Null,
        };
        serialize(&vs, None, stamp).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_ends_when_its_compute_thread_fails() {
        // A learner that never answers (give_up_after_s = 0: the link alone would retry
        // forever) and a compute thread that fails at once, or panics.
        let link = || Link {
            settings: common::settings::ClientSettings {
                learner: "http://127.0.0.1:1".into(),
                give_up_after_s: 0,
                ..Default::default()
            },
            credentials: Credentials::new(&common::settings::AuthSettings::default()).unwrap(),
            identity: Identity {
                role: Role::Evaluator,
                name: "test".into(),
                model_config: Preset::Tiny.config(40),
                vocab_hash: "v".into(),
            },
            weights: watch::channel(None).0,
            credits: Arc::new(tokio::sync::Semaphore::new(CREDITS)),
            finished: Arc::new(AtomicBool::new(false)),
            sent: Default::default(),
        };
        let limit = std::time::Duration::from_secs(20);
        let failed = tokio::time::timeout(
            limit,
            run_client(link(), None, |_, _, _| {
                anyhow::bail!("the judge failed to load")
            }),
        )
        .await
        .expect("the client outlived its compute thread");
        let e = format!("{:#}", failed.unwrap_err());
        assert!(e.contains("the judge failed to load"), "{e}");
        let panicked =
            tokio::time::timeout(limit, run_client(link(), None, |_, _, _| panic!("a bug")))
                .await
                .expect("the client outlived its compute thread");
        assert!(format!("{:#}", panicked.unwrap_err()).contains("died"));
    }

    #[test]
    fn a_version_that_does_not_load_is_skipped_and_the_weights_held_stay() {
        let config = Preset::Tiny.config(40);
        let mut s = Student::new(&config, "v", tch::Device::Cpu, &m::ACTOR_CLIENT);
        assert!(s.update(Some(&weights(1, blob(&config, 1)))).unwrap());
        let sums = |s: &Student| -> std::collections::BTreeMap<String, f64> {
            s.vs.variables()
                .into_iter()
                .map(|(n, t)| (n, t.sum(tch::Kind::Double).double_value(&[])))
                .collect()
        };
        let held = sums(&s);
        // Damaged bytes, then another architecture's weights: skipped, not an error.
        let mut damaged = blob(&config, 2);
        let n = damaged.len();
        damaged[n - 3] ^= 0xff;
        assert!(!s.update(Some(&weights(2, damaged))).unwrap());
        let other = blob(&Preset::Tiny.config(41), 3);
        assert!(!s.update(Some(&weights(3, other))).unwrap());
        assert_eq!(s.version, 1);
        assert_eq!(held, sums(&s));
        // The next good version loads.
        assert!(s.update(Some(&weights(4, blob(&config, 4)))).unwrap());
        assert_eq!(s.version, 4);
    }
}
