//! `qd bench service`: the service's throughput, measured side by side in one run.
//!
//! 1. Trajectories per second, learner step time and the learner's idle share with 1, 2
//!    and 4 actors: `qd run` with the given config (evaluator off, a temporary run
//!    folder, free ports) for a fixed number of steps, read back from its `train.jsonl`.
//! 2. Weight delivery: the time for one published version of the base model to reach
//!    every subscriber through `WatchWeights` (real server, real clients, loopback),
//!    against the time to copy the same bytes to as many raw TCP connections on
//!    loopback (open and warm, like the streams; one copy after each version), for 2 and
//!    for 8 subscribers.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::generate::median;
use actor::broadcast::Assembler;
use actor::client::{Credentials, Identity};
use common::settings::Settings;
use folk::dataset::Dataset;
use learner::broadcast::Published;
use learner::server::{Service, Shared};
use learner::validate::Rules;
use model::checkpoint::{Checkpoint, ModelKind};
use qd_proto::WatchRequest;

/// What `qd bench service` measures.
#[derive(Debug, Serialize)]
pub struct ServiceBench {
    pub steps: u64,
    pub runs: Vec<RunBench>,
    pub weight_bytes: usize,
    pub deliveries: Vec<DeliveryBench>,
}

/// One version delivered to `subscribers` subscribers.
#[derive(Debug, Serialize)]
pub struct DeliveryBench {
    pub subscribers: usize,
    /// Median seconds for one version to reach every subscriber over gRPC.
    pub delivery_seconds: f64,
    /// Median seconds to copy the same bytes to as many raw loopback sockets.
    pub loopback_copy_seconds: f64,
    /// `delivery_seconds / loopback_copy_seconds`.
    pub delivery_over_copy: f64,
}

/// One `qd run` with `actors` actors.
#[derive(Debug, Serialize)]
pub struct RunBench {
    pub actors: usize,
    /// Trajectories (pairs) trained per second, from the second step to the last.
    pub trajectories_per_s: f64,
    /// Median compute time of a learner step.
    pub step_seconds: f64,
    /// Median wall time between steps (waiting for trajectories included).
    pub step_interval_seconds: f64,
    /// Share of the run's time the learner was not computing a step (waiting for
    /// trajectories, publishing): 1 − Σ step compute / the time from the first step to
    /// the last.
    pub learner_idle_share: f64,
}

/// Runs the whole benchmark.
pub fn bench_service(
    config: Option<&Path>,
    sets: &[String],
    steps: u64,
    actors: &[usize],
    subscribers: &[usize],
    reps: usize,
) -> Result<ServiceBench> {
    let settings = Settings::load(config, sets)?;
    let mut runs = Vec::new();
    for &k in actors {
        eprintln!("bench service: {steps} learner steps with {k} actor(s)…");
        runs.push(run_with_actors(config, sets, steps, k)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (mut weight_bytes, mut deliveries) = (0, Vec::new());
    for &n in subscribers {
        eprintln!("bench service: weight delivery to {n} subscribers ({reps} versions)…");
        let (bytes, delivery, copy) = rt.block_on(delivery(&settings, n, reps))?;
        weight_bytes = bytes;
        deliveries.push(DeliveryBench {
            subscribers: n,
            delivery_seconds: delivery,
            loopback_copy_seconds: copy,
            delivery_over_copy: delivery / copy.max(1e-12),
        });
    }
    Ok(ServiceBench {
        steps,
        runs,
        weight_bytes,
        deliveries,
    })
}

fn run_with_actors(
    config: Option<&Path>,
    sets: &[String],
    steps: u64,
    actors: usize,
) -> Result<RunBench> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let ours = [
        format!("paths.run_dir={}", dir.path().display()),
        format!("learner.max_steps={steps}"),
        "learner.listen=127.0.0.1:0".into(),
        "learner.metrics_listen=".into(),
        "actor.metrics_listen=".into(),
        format!("run.actors={actors}"),
        "run.evaluator=false".into(),
    ];
    for s in sets.iter().chain(&ours) {
        cmd.arg("--set").arg(s);
    }
    let log = dir.path().join("run.log");
    let f = std::fs::File::create(&log)?;
    let status = cmd.stdout(f.try_clone()?).stderr(f).status()?;
    if !status.success() {
        bail!(
            "qd run failed ({status}); its log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("train.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    if lines.len() < 3 {
        bail!("too few steps to measure ({}); raise --steps", lines.len());
    }
    let f = |l: &serde_json::Value, k: &str| l[k].as_f64().unwrap_or(f64::NAN);
    let (first, last) = (&lines[0], &lines[lines.len() - 1]);
    let pairs: f64 = lines[1..].iter().map(|l| f(l, "pairs")).sum();
    let seconds = f(last, "unix_time") - f(first, "unix_time");
    let intervals: Vec<f64> = lines
        .windows(2)
        .map(|w| f(&w[1], "unix_time") - f(&w[0], "unix_time"))
        .collect();
    let computing: f64 = lines[1..].iter().map(|l| f(l, "step_seconds")).sum();
    Ok(RunBench {
        actors,
        trajectories_per_s: pairs / seconds.max(1e-9),
        step_seconds: median(lines.iter().map(|l| f(l, "step_seconds")).collect()),
        step_interval_seconds: median(intervals),
        learner_idle_share: (1.0 - computing / seconds.max(1e-9)).max(0.0),
    })
}

/// Median seconds to deliver one version to `n` subscribers, and to copy the same bytes.
async fn delivery(settings: &Settings, n: usize, reps: usize) -> Result<(usize, f64, f64)> {
    let ds = Dataset::load(&settings.paths.data)?;
    let path = &settings.paths.base;
    let base = Checkpoint::read_for(path, ModelKind::Policy, &ds.vocab.hash())
        .context("the base model")?;
    // What the learner publishes: the policy's tensors without the optimizer's moments.
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _policy = model::transformer::Transformer::new(&vs.root(), &base.meta.config);
    base.load_into(&mut vs)?;
    let stamp = model::checkpoint::Stamp {
        kind: ModelKind::Policy,
        config: &base.meta.config,
        vocab_hash: &base.meta.vocab_hash,
        step: 0,
        version: 0,
        extra: serde_json::Value::Null,
    };
    let blob = model::checkpoint::serialize(&vs, None, stamp)?;
    let (queue, _rx) = learner::queue::Queue::new(1, 0);
    let rules = Rules {
        prompts: Default::default(),
        allowed: vec![],
        eos: 2,
        max_len: 0,
        max_trajectories: 1,
        samples_per_prompt: 2,
    };
    let shared = Arc::new(Shared::new(
        rules,
        base.meta.config.clone(),
        ds.vocab.hash(),
        settings.learner.chunk_bytes,
        settings.learner.max_message_bytes,
        0,
        settings.limits.clone(),
        queue,
        Arc::new(learner::broadcast::Publisher::default()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let svc = Service::server(shared.clone());
    tokio::spawn(
        learner::transport::transport(&settings.limits, shared.max_request_bytes)
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let client_settings = common::settings::ClientSettings {
        learner: format!("http://{addr}"),
        ..settings.client.clone()
    };
    // One task per subscriber reports each version it has received whole.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let identity = Identity {
        role: qd_proto::Role::Actor,
        name: "bench".into(),
        model_config: base.meta.config.clone(),
        vocab_hash: ds.vocab.hash(),
    };
    for _ in 0..n {
        let mut c =
            actor::client::connect(&client_settings, &Credentials::new(&Default::default())?)
                .await?;
        let id = identity.register(&mut c).await?.actor_id;
        let req = identity.tag(tonic::Request::new(WatchRequest { have_version: 0 }), id);
        let mut stream = c.watch_weights(req).await?.into_inner();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let mut a = Assembler::default();
            while let Ok(Some(chunk)) = stream.message().await {
                match a.push(chunk, u64::MAX) {
                    Ok(Some(w)) => {
                        if done.send(w.version).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
            }
        });
    }
    // Versions and raw copies interleaved, so that both see the same machine; the first
    // of each warms up (connections, buffers) and is not counted.
    let mut raw = RawCopy::connect(Arc::from(blob.as_slice()), n).await?;
    let (mut times, mut copies) = (Vec::new(), Vec::new());
    for v in 1..=reps as u64 + 1 {
        // What the trainer hands over: the buffer it serialised into and its CRC32
        // (serialising and checksumming are the trainer's work, not the delivery's).
        let version = Published::new(v, 0, blob.clone());
        let t0 = Instant::now();
        shared.publisher.publish(version);
        let mut got = 0;
        while got < n {
            let version = tokio::time::timeout(Duration::from_secs(60), done_rx.recv())
                .await
                .context("a subscriber stalled")?
                .context("a subscriber failed")?;
            if version == v {
                got += 1;
            }
        }
        let delivered = t0.elapsed().as_secs_f64();
        let copied = raw.once().await?;
        if v > 1 {
            times.push(delivered);
            copies.push(copied);
        }
    }
    Ok((blob.len(), median(times), median(copies)))
}

/// The physical reference of a delivery: `n` raw TCP connections on loopback, open and
/// warm like the gRPC streams, each with a receive buffer that is allocated and touched
/// beforehand.
struct RawCopy {
    blob: Arc<[u8]>,
    pairs: Vec<(tokio::net::TcpStream, tokio::net::TcpStream, Vec<u8>)>,
}

impl RawCopy {
    async fn connect(blob: Arc<[u8]>, n: usize) -> Result<RawCopy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let (client, accepted) =
                tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
            pairs.push((accepted?.0, client?, vec![1u8; blob.len()]));
        }
        Ok(RawCopy { blob, pairs })
    }

    /// Seconds to write the blob to every connection at once and read each copy back.
    async fn once(&mut self) -> Result<f64> {
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(self.pairs.len());
        for (mut tx, mut rx, mut buf) in self.pairs.drain(..) {
            let b = self.blob.clone();
            let write = tokio::spawn(async move { tx.write_all(&b).await.map(|_| tx) });
            let read =
                tokio::spawn(async move { rx.read_exact(&mut buf).await.map(|_| (rx, buf)) });
            tasks.push((write, read));
        }
        for (write, read) in tasks {
            let wait = Duration::from_secs(60);
            let tx = tokio::time::timeout(wait, write).await???;
            let (rx, buf) = tokio::time::timeout(wait, read).await???;
            self.pairs.push((tx, rx, buf));
        }
        Ok(t0.elapsed().as_secs_f64())
    }
}

impl ServiceBench {
    pub fn table(&self) -> String {
        let mut s = format!("service benchmark ({} learner steps per run)\n", self.steps);
        s.push_str("actors  trajectories/s  step compute s  step interval s  learner idle\n");
        for r in &self.runs {
            s.push_str(&format!(
                "{:>6}  {:>14.2}  {:>14.3}  {:>15.3}  {:>11.0}%\n",
                r.actors,
                r.trajectories_per_s,
                r.step_seconds,
                r.step_interval_seconds,
                100.0 * r.learner_idle_share
            ));
        }
        if let (Some(a), Some(b)) = (
            self.runs.iter().find(|r| r.actors == 1),
            self.runs.iter().find(|r| r.actors == 2),
        ) {
            s.push_str(&format!(
                "2 actors / 1 actor trajectories/s: {:.2}\n",
                b.trajectories_per_s / a.trajectories_per_s.max(1e-12)
            ));
        }
        for d in &self.deliveries {
            s.push_str(&format!(
                "weights: {:.1} MB to {} subscribers in {:.1} ms (median); raw loopback copy {:.1} ms; ratio {:.2}\n",
                self.weight_bytes as f64 / 1e6,
                d.subscribers,
                d.delivery_seconds * 1e3,
                d.loopback_copy_seconds * 1e3,
                d.delivery_over_copy
            ));
        }
        s
    }
}
