//! `qd bench faults`: the fault campaign, against real processes on loopback (a learner
//! with `checkpoint_every = 1` and two actors, started from the given config).
//!
//! 1. **Idle streams**: thousands of `WatchWeights` streams that never read and silent
//!    `PushTrajectories` streams: the learner's resident memory before, at its peak and
//!    after they close, the slowest `Status` answer meanwhile, and whether the actors
//!    kept training.
//! 2. **Malformed messages**: generated bad batches (every field of a valid one broken
//!    in turn: ids, lengths, NaN and infinities, rewards, versions, duplicates, empty,
//!    oversize, undecodable bytes, unregistered client ids), each on its own stream:
//!    every one must come back as an error status; the actors' training rate before and
//!    during the barrage.
//! 3. **Actor kills**: SIGKILL at random moments (an actor pushes all the time, so many
//!    land mid-push), each restarted.
//! 4. **Learner kills**: SIGKILL at random moments and a restart on the same port: it must
//!    resume, leave no temporary file, publish a version above every earlier one, and
//!    every actor must hold it (reconnect time measured); `train.jsonl` must hold each
//!    step once at the end.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use common::settings::Settings;
use common::telemetry::Endpoints;
use eval::bench::median;
use folk::dataset::{Dataset, Split};
use qd_proto::learner_client::LearnerClient;
use qd_proto::{
    RegisterRequest, Role, Sample, StatusRequest, StatusResponse, Trajectory, TrajectoryBatch,
    WatchRequest,
};

/// How hard to push.
#[derive(Clone, Debug)]
pub struct FaultsConfig {
    pub idle_watchers: usize,
    pub idle_pushes: usize,
    pub malformed: usize,
    pub actor_kills: usize,
    pub learner_kills: usize,
    pub seed: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct IdleReport {
    pub watchers_tried: usize,
    pub watchers_held: usize,
    pub pushes_tried: usize,
    pub pushes_held: usize,
    /// The learner's resident memory 10 s before the streams open (training already).
    pub rss_warm_mib: f64,
    /// Its largest over the next 10 s, training without the streams: the baseline.
    pub rss_idle_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_after_mib: f64,
    pub peak_over_idle: f64,
    pub after_over_idle: f64,
    /// The slowest `Status` answer to a client connected before the streams opened.
    pub status_max_seconds: f64,
    /// Whether a client connecting while the streams were open was served.
    pub new_client_served: bool,
    /// Learner steps taken while the streams were open.
    pub steps_during: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct MalformedReport {
    pub sent: usize,
    /// Answered with an error status.
    pub refused: usize,
    /// Acknowledged, or ended without a status: each one is a defect.
    pub accepted: usize,
    /// Distinct ways of breaking a valid batch among those sent (of 16).
    pub kinds_of_broken_batch: usize,
    /// Refusals by status code.
    pub codes: std::collections::BTreeMap<String, usize>,
    pub steps_per_s_before: f64,
    pub steps_per_s_during: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct KillReport {
    pub actor_kills: usize,
    pub learner_kills: usize,
    pub learner_resumed: usize,
    /// Seconds from a restarted learner listening to every actor holding its first
    /// version.
    pub reconnect_seconds: Vec<f64>,
    pub reconnect_median: f64,
    pub reconnect_max: f64,
    /// Restarts whose first version was not above every version seen before the kill.
    pub versions_reused: usize,
    pub stray_temp_files: usize,
    /// Lines of `train.jsonl` whose step is not one more than the line before.
    pub log_step_errors: usize,
    pub final_step: u64,
    /// The step of the checkpoint the learner wrote when stopped by SIGTERM at the end
    /// (equal to `final_step` when the stop loses nothing).
    pub final_checkpoint_step: u64,
    /// ERROR lines in the learner's logs.
    pub learner_errors: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct FaultsReport {
    pub idle: IdleReport,
    pub malformed: MalformedReport,
    pub kills: KillReport,
}

/// A qd process, killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Proc {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes of the campaign and where they are.
struct Cluster {
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
    sets: Vec<String>,
    learner: Option<Proc>,
    actors: Vec<Proc>,
    learner_logs: Vec<PathBuf>,
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// One sample of a Prometheus page, by exact series name.
fn scrape(addr: SocketAddr, series: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut page = String::new();
    s.read_to_string(&mut page).ok()?;
    page.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

impl Cluster {
    fn spawn(&self, name: &str, role: &str, sets: &[String], args: &[&Path]) -> Result<Proc> {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(role);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        for s in self.sets.iter().chain(sets) {
            cmd.arg("--set").arg(s);
        }
        if let Some(ready) = args.first() {
            cmd.arg("--ready-file").arg(ready);
        }
        let f = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { child, log })
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Starts (or restarts) the learner; its endpoints once it listens.
    fn start_learner(&mut self) -> Result<Endpoints> {
        let endpoints = self.run_dir().join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints);
        let n = self.learner_logs.len();
        let p = self.spawn(&format!("learner-{n}"), "learner", &[], &[])?;
        self.learner_logs.push(p.log.clone());
        self.learner = Some(p);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(e) = Endpoints::read(&endpoints) {
                return Ok(e);
            }
            if let Some(l) = self.learner.as_mut() {
                if let Some(s) = l.child.try_wait()? {
                    bail!(
                        "the learner exited ({s}): {}",
                        std::fs::read_to_string(&l.log).unwrap_or_default()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("the learner did not listen within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts actor `i` (again); its metrics address once it serves them.
    fn start_actor(&mut self, i: usize) -> Result<SocketAddr> {
        let ready = self.dir.path().join(format!("actor-{i}.json"));
        let _ = std::fs::remove_file(&ready);
        let p = self.spawn(
            &format!("actor-{i}"),
            "actor",
            &[
                format!("actor.name=actor-{i}"),
                format!("actor.seed={i}"),
                "actor.metrics_listen=127.0.0.1:0".into(),
            ],
            &[&ready],
        )?;
        if i < self.actors.len() {
            self.actors[i] = p;
        } else {
            self.actors.push(p);
        }
        wait("an actor to start", Duration::from_secs(120), || {
            Endpoints::read(&ready).ok().and_then(|e| e.metrics)
        })
    }
}

/// Polls `f` every 20 ms until it gives a value, for at most `limit`.
fn wait<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The learner's status (a fresh connection each time: the learner may have restarted).
async fn status(addr: SocketAddr) -> Result<StatusResponse> {
    let mut c = LearnerClient::connect(format!("http://{addr}")).await?;
    Ok(c.status(StatusRequest {}).await?.into_inner())
}

type Client = LearnerClient<tonic::transport::Channel>;

async fn register(c: &mut Client, s: &StatusResponse) -> Result<u64> {
    let req = RegisterRequest {
        protocol_version: qd_proto::PROTOCOL_VERSION,
        model_config_hash: s.model_config_hash.clone(),
        model_config_json: String::new(),
        vocab_hash: s.vocab_hash.clone(),
        role: Role::Actor as i32,
        name: "faults".into(),
    };
    Ok(c.register(req).await?.into_inner().actor_id)
}

fn tagged<T>(msg: T, id: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = id.to_string().parse() {
        r.metadata_mut().insert("qd-actor-id", v);
    }
    r
}

/// Runs the campaign.
pub fn bench_faults(
    config: Option<&Path>,
    sets: &[String],
    cfg: &FaultsConfig,
) -> Result<FaultsReport> {
    let settings = Settings::load(config, sets)?;
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut ours = vec![
        format!("paths.run_dir={}", dir.path().join("run").display()),
        format!("learner.listen={addr}"),
        "learner.metrics_listen=127.0.0.1:0".into(),
        "learner.checkpoint_every=1".into(),
        "learner.max_steps=0".into(),
        format!("client.learner=http://{addr}"),
    ];
    ours.extend(sets.iter().cloned());
    let mut cluster = Cluster {
        dir,
        config: config.map(Path::to_path_buf),
        sets: ours,
        learner: None,
        actors: Vec::new(),
        learner_logs: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let mut report = FaultsReport::default();

    let endpoints = cluster.start_learner()?;
    let mut actor_metrics = [cluster.start_actor(0)?, cluster.start_actor(1)?];
    let step_now = |rt: &tokio::runtime::Runtime| rt.block_on(status(addr)).map(|s| s.step);
    // Warm: the learner's memory has settled after some steps.
    wait("the first steps", Duration::from_secs(300), || {
        step_now(&rt).ok().filter(|&s| s >= 20)
    })?;

    eprintln!(
        "bench faults: {} idle weight streams, {} silent trajectory streams…",
        cfg.idle_watchers, cfg.idle_pushes
    );
    let pid = endpoints.pid;
    report.idle = rt.block_on(idle_streams(addr, pid, cfg))?;

    eprintln!("bench faults: {} malformed messages…", cfg.malformed);
    let ds = Dataset::load(&settings.paths.data)?;
    report.malformed = rt.block_on(malformed(addr, &ds, cfg.malformed, &mut rng))?;

    eprintln!("bench faults: {} actor kills…", cfg.actor_kills);
    for k in 0..cfg.actor_kills {
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..2000)));
        let i = k % cluster.actors.len();
        cluster.actors[i].kill();
        actor_metrics[i] = cluster.start_actor(i)?;
        report.kills.actor_kills += 1;
    }

    eprintln!("bench faults: {} learner kills…", cfg.learner_kills);
    for _ in 0..cfg.learner_kills {
        std::thread::sleep(Duration::from_millis(rng.gen_range(500..3000)));
        let seen = rt.block_on(status(addr)).map(|s| s.version).unwrap_or(0);
        if let Some(l) = cluster.learner.as_mut() {
            l.kill();
        }
        report.kills.learner_kills += 1;
        let e = cluster.start_learner()?;
        // What the killed learner was writing is gone once the new one has started.
        report.kills.stray_temp_files += temp_files(&cluster.run_dir(), Some(e.pid));
        let up = Instant::now();
        report.kills.learner_resumed += 1;
        let first = rt.block_on(status(e.grpc.unwrap_or(addr)))?.version;
        if first <= seen {
            report.kills.versions_reused += 1;
        }
        // Every actor holds the restarted learner's first version or a newer one.
        wait(
            "every actor to hold the restarted learner's weights",
            Duration::from_secs(120),
            || {
                actor_metrics
                    .iter()
                    .all(|&m| {
                        scrape(m, "qd_actor_weight_version").is_some_and(|v| v >= first as f64)
                    })
                    .then_some(())
            },
        )?;
        report
            .kills
            .reconnect_seconds
            .push(up.elapsed().as_secs_f64());
    }
    let end = rt.block_on(status(addr))?;
    wait(
        "a step after the last restart",
        Duration::from_secs(120),
        || step_now(&rt).ok().filter(|&s| s > end.step),
    )?;
    if let Some(l) = cluster.learner.as_mut() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(l.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let _ = l.child.wait();
    }
    let k = &mut report.kills;
    k.reconnect_median = median(k.reconnect_seconds.clone());
    k.reconnect_max = k.reconnect_seconds.iter().copied().fold(0.0, f64::max);
    k.stray_temp_files += temp_files(&cluster.run_dir(), None);
    let steps: Vec<u64> = std::fs::read_to_string(cluster.run_dir().join("train.jsonl"))?
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get("step")?
                .as_u64()
        })
        .collect();
    k.log_step_errors = steps
        .iter()
        .enumerate()
        .filter(|(i, &s)| s != *i as u64 + 1)
        .count();
    k.final_step = steps.last().copied().unwrap_or(0);
    k.final_checkpoint_step = learner::trainer::checkpoints(&cluster.run_dir())
        .first()
        .and_then(|p| model::checkpoint::Checkpoint::read(p).ok())
        .map_or(0, |c| c.meta.step);
    k.learner_errors = cluster
        .learner_logs
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(" ERROR "))
                .count()
        })
        .sum();
    Ok(report)
}

/// Temporary files in the run folder or its checkpoints that no live process (`live`,
/// the learner's pid) is writing.
fn temp_files(run_dir: &Path, live: Option<u32>) -> usize {
    [run_dir.to_path_buf(), run_dir.join("checkpoints")]
        .iter()
        .flat_map(|d| model::fsutil::temp_files(d))
        .filter(|(_, pid)| live.is_none() || *pid != live)
        .count()
}

/// Opens the idle streams, watches the learner while they are open, closes them.
async fn idle_streams(addr: SocketAddr, pid: u32, cfg: &FaultsConfig) -> Result<IdleReport> {
    let url = format!("http://{addr}");
    // A client connected before, as an operator's dashboard or probe would be.
    let mut probe = LearnerClient::connect(url.clone()).await?;
    let warm = rss_mib(pid);
    let mut idle = warm;
    for _ in 0..100 {
        idle = idle.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut r = IdleReport {
        watchers_tried: cfg.idle_watchers,
        pushes_tried: cfg.idle_pushes,
        rss_warm_mib: warm,
        rss_idle_mib: idle,
        ..IdleReport::default()
    };
    let s0 = probe.status(StatusRequest {}).await?.into_inner();
    // Streams spread over connections of 8, as many clients would open them; each
    // client registers once.
    let mut held_watch = Vec::new();
    let mut held_push = Vec::new();
    let mut keep_tx = Vec::new();
    let mut clients = Vec::new();
    let total = cfg.idle_watchers + cfg.idle_pushes;
    for n in 0..total {
        if n % 8 == 0 {
            let Ok(mut c) = LearnerClient::connect(url.clone()).await else {
                clients.push(None);
                continue;
            };
            let id = register(&mut c, &s0).await.unwrap_or(0);
            clients.push(Some((c, id)));
        }
        let Some(Some((c, id))) = clients.last_mut() else {
            continue;
        };
        if n < cfg.idle_watchers {
            if let Ok(s) = c
                .watch_weights(tagged(WatchRequest { have_version: 0 }, *id))
                .await
            {
                held_watch.push(s.into_inner());
            }
        } else {
            let (tx, rx) = mpsc::channel::<TrajectoryBatch>(1);
            if let Ok(s) = c
                .push_trajectories(tagged(ReceiverStream::new(rx), *id))
                .await
            {
                held_push.push(s.into_inner());
                keep_tx.push(tx);
            }
        }
    }
    r.watchers_held = held_watch.len();
    r.pushes_held = held_push.len();
    // Five seconds with everything open: memory, Status latency, training.
    let mut peak = r.rss_idle_mib;
    let mut slowest = 0f64;
    let start = Instant::now();
    r.new_client_served = tokio::time::timeout(Duration::from_secs(2), status(addr))
        .await
        .is_ok_and(|s| s.is_ok());
    while start.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        let s = tokio::time::timeout(Duration::from_secs(10), probe.status(StatusRequest {}))
            .await
            .context("Status did not answer within 10 s")??
            .into_inner();
        slowest = slowest.max(t.elapsed().as_secs_f64());
        r.steps_during = s.step - s0.step;
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.rss_peak_mib = peak;
    r.status_max_seconds = slowest;
    drop((held_watch, held_push, keep_tx, clients));
    // Closed: the learner's memory a few seconds later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    r.rss_after_mib = rss_mib(pid);
    r.peak_over_idle = r.rss_peak_mib / r.rss_idle_mib;
    r.after_over_idle = r.rss_after_mib / r.rss_idle_mib;
    Ok(r)
}

/// One broken variant of a valid batch, by kind; what it breaks.
fn broken(
    good: &TrajectoryBatch,
    kind: usize,
    rng: &mut rand::rngs::StdRng,
) -> (&'static str, TrajectoryBatch) {
    let mut b = good.clone();
    let t = &mut b.trajectories[0];
    let j = rng.gen_range(0..2);
    let what = match kind % 16 {
        0 => {
            t.samples[j].tokens[0] = rng.gen_range(1_000..u32::MAX);
            "token id out of range"
        }
        1 => {
            t.samples[j].logprobs[0] =
                [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.gen_range(0..3)];
            "non-finite log-probability"
        }
        2 => {
            t.samples[j].logprobs[0] = rng.gen_range(1e-3..1e6);
            "positive log-probability"
        }
        3 => {
            t.samples[j].logprobs[0] = -rng.gen_range(105.0..3.4e38);
            "log-probability no sampler records"
        }
        4 => {
            t.reward = [f32::NAN, f32::INFINITY, -1.0, 2.5, 1e30][rng.gen_range(0..5)];
            "reward"
        }
        5 => {
            t.samples[j].logprobs.pop();
            "fewer log-probs than tokens"
        }
        6 => {
            t.samples[j].tokens.clear();
            t.samples[j].logprobs.clear();
            "empty sample"
        }
        7 => {
            t.samples.truncate(1);
            "one sample"
        }
        8 => {
            let extra = t.samples[0].clone();
            t.samples.push(extra);
            "three samples"
        }
        9 => {
            t.prompt = (0..rng.gen_range(1..20))
                .map(|_| rng.gen_range(0..40))
                .collect();
            "unknown prompt"
        }
        10 => {
            b.version = rng.gen_range(1_000_000..u64::MAX);
            "version from the future"
        }
        11 => {
            b.version = 0;
            "version 0"
        }
        12 => {
            b.trajectories.clear();
            "empty batch"
        }
        13 => {
            let n = rng.gen_range(10_000..100_000);
            t.samples[j].tokens = vec![t.samples[j].tokens[0]; n];
            t.samples[j].logprobs = vec![-1.0; n];
            "sample longer than the context"
        }
        14 => {
            let eos = *t.samples[j].tokens.last().unwrap_or(&0);
            t.samples[j].tokens.insert(0, eos);
            t.samples[j].logprobs.insert(0, -1.0);
            "<eos> before the end"
        }
        _ => {
            let copies = rng.gen_range(1_000..5_000);
            b.trajectories = vec![b.trajectories[0].clone(); copies];
            "more trajectories than the queue holds"
        }
    };
    (what, b)
}

/// Sends `n` broken batches (and, every tenth, a duplicate, an unregistered id or bytes
/// that do not decode), each on its own stream; counts the answers.
async fn malformed(
    addr: SocketAddr,
    ds: &Dataset,
    n: usize,
    rng: &mut rand::rngs::StdRng,
) -> Result<MalformedReport> {
    let mut r = MalformedReport {
        sent: n,
        ..MalformedReport::default()
    };
    let s0 = status(addr).await?;
    let mut c = LearnerClient::connect(format!("http://{addr}")).await?;
    let id = register(&mut c, &s0).await?;
    let prompt = ds
        .split(Split::Train)
        .next()
        .context("no training prompt")?
        .prompt
        .clone();
    let tune = ds.vocab.tune_ids().next().context("no tune token")?;
    let eos = folk::vocab::EOS;
    let sample = |len: usize| Sample {
        tokens: std::iter::repeat_n(tune, len).chain([eos]).collect(),
        logprobs: vec![-1.0; len + 1],
    };
    let good = TrajectoryBatch {
        version: s0.version,
        sequence: 1,
        trajectories: vec![Trajectory {
            prompt,
            reward: 0.5,
            samples: vec![sample(3), sample(5)],
        }],
    };
    let before = Instant::now();
    let steps_before = status(addr).await?.step;
    tokio::time::sleep(Duration::from_secs(3)).await;
    r.steps_per_s_before =
        (status(addr).await?.step - steps_before) as f64 / before.elapsed().as_secs_f64();
    let start = Instant::now();
    let steps_start = status(addr).await?.step;
    let mut kinds = HashSet::new();
    for k in 0..n {
        let outcome = match k % 10 {
            // The same (valid) batch twice on one stream: the second is the bad one.
            0 => {
                let mut b = good.clone();
                b.version = status(addr).await?.version;
                let mut acks = c
                    .push_trajectories(tagged(tokio_stream::iter(vec![b.clone(), b]), id))
                    .await?
                    .into_inner();
                let _ = acks.message().await;
                acks.message().await.map(|a| a.is_some())
            }
            // A stream under an id Register never issued.
            1 => {
                let bad = id + 1_000_000 + k as u64;
                match c
                    .push_trajectories(tagged(tokio_stream::iter(vec![good.clone()]), bad))
                    .await
                {
                    Ok(s) => s.into_inner().message().await.map(|a| a.is_some()),
                    Err(e) => Err(e),
                }
            }
            // Random bytes on the wire.
            2 => push_bytes(addr, id, rng).await,
            _ => {
                let (what, b) = broken(&good, rng.gen_range(0..16), rng);
                kinds.insert(what);
                match c
                    .push_trajectories(tagged(tokio_stream::iter(vec![b]), id))
                    .await
                {
                    Ok(s) => s.into_inner().message().await.map(|a| a.is_some()),
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Err(e) => {
                r.refused += 1;
                *r.codes.entry(format!("{:?}", e.code())).or_default() += 1;
            }
            Ok(_) => r.accepted += 1,
        }
    }
    r.kinds_of_broken_batch = kinds.len();
    r.steps_per_s_during =
        (status(addr).await?.step - steps_start) as f64 / start.elapsed().as_secs_f64();
    Ok(r)
}

/// Random bytes as one message on a `PushTrajectories` stream.
async fn push_bytes(
    addr: SocketAddr,
    id: u64,
    rng: &mut rand::rngs::StdRng,
) -> Result<bool, tonic::Status> {
    let bytes: Vec<u8> = (0..rng.gen_range(1..512)).map(|_| rng.gen()).collect();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/qd.v1.Learner/PushTrajectories");
    let mut acks = grpc
        .streaming(tagged(tokio_stream::iter(vec![bytes]), id), path, RawCodec)
        .await?
        .into_inner();
    acks.message().await.map(|a| a.is_some())
}

/// Sends each `Vec<u8>` as a message's bytes, as they are; reads `PushAck`s.
struct RawCodec;

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use tonic_prost::prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = qd_proto::PushAck;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<qd_proto::PushAck>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}
