//! The actor role (rollouts of the current student, scored by the frozen embedder, sent
//! to the learner) and the evaluator role (an actor that sends nothing back and scores
//! new versions on held-out prompts). Both keep their connection to the learner alive
//! with [`maintain`], and do their compute on their own thread, swapping weights only
//! between rollouts.

pub mod broadcast;
pub mod client;
pub mod evaluator;
pub mod metrics;
pub mod rollout;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use qd_proto::{PushAck, Role, TrajectoryBatch, WatchRequest};
use tch::nn::VarStore;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use common::settings::{ClientSettings, Settings};
use model::checkpoint::read_policy;
use model::config::ModelConfig;
use model::task::Task;
use model::transformer::Transformer;

use crate::metrics as m;
use broadcast::{Assembler, Weights, MAX_WEIGHT_BYTES};
use client::{connect, is_fatal, Backoff, Credentials, Identity};

/// Batches an actor may have made and not yet seen queued by the learner (made, waiting
/// or in flight). One keeps trajectories fresh: a new rollout starts only once the
/// learner has queued the last one, so a full learner queue pauses the actors instead of
/// letting their batches age.
pub const CREDITS: usize = 1;

/// What keeps a client connected and hands weights to its compute thread.
#[derive(Debug)]
pub struct Link {
    pub settings: ClientSettings,
    pub credentials: Credentials,
    pub identity: Identity,
    /// The newest verified weights (read by the compute thread between rollouts).
    pub weights: watch::Sender<Option<Arc<Weights>>>,
    /// Taken by the compute thread before each rollout, given back when the learner
    /// acknowledges (or the batch is lost): see [`CREDITS`].
    pub credits: Arc<tokio::sync::Semaphore>,
    /// Set when the learner has said the run finished (before the compute thread is
    /// told to stop): `weights` then holds the final version.
    pub finished: Arc<AtomicBool>,
}

/// The student as a client holds it: weights of one published version.
#[derive(Debug)]
pub struct Student {
    pub vs: VarStore,
    pub model: Transformer,
    pub version: u64,
    vocab_hash: String,
}

impl Student {
    pub fn new(config: &ModelConfig, vocab_hash: &str, device: tch::Device) -> Student {
        let vs = VarStore::new(device);
        let model = Transformer::new(&vs.root(), config);
        Student {
            vs,
            model,
            version: 0,
            vocab_hash: vocab_hash.to_string(),
        }
    }

    /// Swaps in `w` if it is another version than the one held.
    pub fn update(&mut self, w: Option<&Arc<Weights>>) -> Result<bool> {
        let Some(w) = w.filter(|w| w.version != self.version) else {
            return Ok(false);
        };
        let t0 = std::time::Instant::now();
        let ck = w.checkpoint()?;
        ck.check_compatible(&self.model.config, &self.vocab_hash)
            .with_context(|| format!("weights version {}", w.version))?;
        ck.load_into(&mut self.vs)?;
        let sync_seconds = w.sync_seconds + t0.elapsed().as_secs_f64();
        ::metrics::gauge!(m::WEIGHT_VERSION).set(w.version as f64);
        ::metrics::histogram!(m::WEIGHT_SYNC_SECONDS).record(sync_seconds);
        ::metrics::counter!(m::WEIGHT_SYNC_BYTES).increment(w.blob.len() as u64);
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
    let computing = tokio::task::spawn_blocking(move || compute(weights, stop, rt));
    let outcome = tokio::select! {
        r = maintain(&link, batches.as_mut(), stop_rx) => r,
        _ = common::shutdown::termination() => Ok(()),
    };
    let _ = stop_tx.send(true);
    drop(batches);
    let computed = computing.await.context("the compute thread died")?;
    outcome.and(computed)
}

/// Keeps a connection to the learner until `stop` or the end of the run (then it sets
/// `link.finished`): registers, streams weights into `link.weights`, and (for actors)
/// sends `batches`; reconnects with back-off after any failure. Returns an error only
/// when the learner refuses this client.
pub async fn maintain(
    link: &Link,
    mut batches: Option<&mut mpsc::Receiver<TrajectoryBatch>>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut backoff = Backoff::new(&link.settings);
    let mut pending: Option<TrajectoryBatch> = None;
    loop {
        let ended = tokio::select! {
            r = session(link, batches.as_deref_mut(), &mut pending, &mut backoff) => r,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let ended = match ended {
            Ended::Finished { version } => {
                tracing::info!(version, "the learner has finished the run; stopping");
                link.finished.store(true, Ordering::SeqCst);
                return Ok(());
            }
            Ended::Lost(status) => status,
        };
        if is_fatal(&ended) {
            bail!("the learner refused this client: {}", ended.message());
        }
        if ended.code() == tonic::Code::Cancelled {
            return Ok(());
        }
        ::metrics::counter!(m::RECONNECTS).increment(1);
        let delay = backoff.next_delay();
        tracing::warn!(
            code = ?ended.code(),
            retry_in_ms = delay.as_millis() as u64,
            "connection to the learner lost: {}",
            ended.message()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

async fn next_ack(acks: &mut Option<Streaming<PushAck>>) -> Result<Option<PushAck>, Status> {
    match acks {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

async fn next_batch(
    b: &mut Option<&mut mpsc::Receiver<TrajectoryBatch>>,
) -> Option<TrajectoryBatch> {
    match b {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// How a connection ended.
enum Ended {
    /// The learner has finished the run; `version` is its final one.
    Finished { version: u64 },
    /// It failed (the status says why): connect again.
    Lost(Status),
}

/// One connection, until the run finishes or the connection fails.
async fn session(
    link: &Link,
    mut batches: Option<&mut mpsc::Receiver<TrajectoryBatch>>,
    pending: &mut Option<TrajectoryBatch>,
    backoff: &mut Backoff,
) -> Ended {
    let mut in_flight = 0;
    let ended = match session_inner(link, &mut batches, pending, backoff, &mut in_flight).await {
        Ok(version) => Ended::Finished { version },
        Err(s) => Ended::Lost(s),
    };
    // Batches sent but never acknowledged are lost with the connection.
    link.credits.add_permits(in_flight);
    ended
}

/// One connection; `Ok(final version)` when the learner says the run has finished.
async fn session_inner(
    link: &Link,
    batches: &mut Option<&mut mpsc::Receiver<TrajectoryBatch>>,
    pending: &mut Option<TrajectoryBatch>,
    backoff: &mut Backoff,
    in_flight: &mut usize,
) -> Result<u64, Status> {
    let mut client = connect(&link.settings, &link.credentials).await?;
    let reg = link.identity.register(&mut client).await?;
    // An actor has nothing left to do; an evaluator fetches the final version first
    // (its weight stream sends it, then ends).
    if reg.finished && link.identity.role == Role::Actor {
        return Ok(reg.version);
    }
    let id = reg.actor_id;
    let have = link.weights.borrow().as_ref().map_or(0, |w| w.version);
    tracing::info!(
        id,
        learner_version = reg.version,
        learner_step = reg.step,
        have_version = have,
        "registered with the learner"
    );
    let watch_req = link
        .identity
        .tag(Request::new(WatchRequest { have_version: have }), id);
    let mut chunks = client.clone().watch_weights(watch_req).await?.into_inner();
    let (out_tx, out_rx) = mpsc::channel::<TrajectoryBatch>(CREDITS);
    let mut acks = match batches {
        Some(_) => {
            let req = link
                .identity
                .tag(Request::new(ReceiverStream::new(out_rx)), id);
            Some(client.push_trajectories(req).await?.into_inner())
        }
        None => None,
    };
    // Only a session whose streams the learner accepted resets the back-off: one refused
    // after Register (a full learner: limits.max_watchers, max_push_streams) keeps
    // backing off instead of registering again at once.
    backoff.reset();
    let mut known_version = reg.version;
    let mut assembler = Assembler::default();
    let mut sequence = 0u64;
    loop {
        if let Some(mut b) = pending.take() {
            if b.version > known_version {
                // Made with weights of a learner run that no longer exists (it restarted
                // from an earlier checkpoint): the learner would refuse it.
                ::metrics::counter!(m::BATCHES_DROPPED, "reason" => "version_ahead").increment(1);
                link.credits.add_permits(1);
            } else {
                b.sequence = sequence;
                sequence += 1;
                let n = b.trajectories.len() as u64;
                out_tx
                    .send(b)
                    .await
                    .map_err(|_| Status::unavailable("trajectory stream closed"))?;
                *in_flight += 1;
                ::metrics::counter!(m::TRAJECTORIES_SENT).increment(n);
                ::metrics::counter!(m::BATCHES_SENT).increment(1);
            }
        }
        tokio::select! {
            c = chunks.message() => {
                let Some(c) = c? else {
                    // A clean end: the run finished (the stream ends after the final
                    // version), which the learner confirms.
                    let status = link.identity.tag(Request::new(qd_proto::StatusRequest {}), id);
                    let s = client.status(status).await?.into_inner();
                    if s.finished {
                        return Ok(s.version);
                    }
                    return Err(Status::unavailable("the learner ended the weight stream"));
                };
                known_version = known_version.max(c.version);
                if let Some(w) = assembler.push(c, MAX_WEIGHT_BYTES)? {
                    link.weights.send_replace(Some(Arc::new(w)));
                }
            }
            a = next_ack(&mut acks) => {
                let a = a?.ok_or_else(|| Status::unavailable("the learner ended the trajectory stream"))?;
                if *in_flight > 0 {
                    *in_flight -= 1;
                    link.credits.add_permits(1);
                }
                known_version = known_version.max(a.learner_version);
                ::metrics::gauge!(m::LEARNER_QUEUE_DEPTH).set(f64::from(a.queue_depth));
            }
            b = next_batch(batches) => {
                *pending = Some(b.ok_or_else(|| Status::cancelled("rollouts ended"))?);
            }
        }
    }
}
