//! `qd bench faults`: the fault campaign, against real processes on loopback (a learner
//! with `checkpoint_every = 1` and two actors, started from the given config).
//!
//! 1. **Idle streams**: thousands of `WatchWeights` streams that never read and silent
//!    `PushTrajectories` streams: the learner's resident memory before, at its peak and
//!    after they close, the slowest `Status` answer meanwhile, and whether the actors
//!    kept training.
//! 2. **Heavy messages** (`heavy.rs`): the largest batches the limits let through to
//!    decoding and as long ones of empty trajectories, on many streams at once, then
//!    63 MiB messages: the learner's peak resident memory.
//! 3. **Malformed messages**: generated bad batches (every field of a valid one broken
//!    in turn: ids, lengths, NaN and infinities, rewards, versions, duplicates, empty,
//!    oversize, undecodable bytes, unregistered client ids), each on its own stream:
//!    every one must come back as an error status; the actors' training rate before and
//!    during the barrage.
//! 4. **Actor kills**: SIGKILL at random moments (an actor pushes all the time, so many
//!    land mid-push), each restarted.
//! 5. **Learner kills**: SIGKILL at random moments and a restart on the same port: it must
//!    resume, leave no temporary file, publish a version above every earlier one, and
//!    every actor must hold it (reconnect time measured); `train.jsonl` must hold each
//!    step once at the end.

mod cluster;
mod heavy;
mod idle;
mod malformed;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::generate::median;
use common::settings::Settings;
use folk::dataset::Dataset;

use cluster::*;
use heavy::heavy_messages;
pub use heavy::HeavyReport;
use idle::idle_streams;
use malformed::malformed;

/// How hard to push.
#[derive(Clone, Debug)]
pub struct FaultsConfig {
    pub idle_watchers: usize,
    pub idle_pushes: usize,
    /// Trajectory streams sending heavy messages at once, and 63 MiB messages after.
    pub heavy_streams: usize,
    pub oversize_messages: usize,
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
    /// Restarts that began at (or after) the step of the newest checkpoint the killed
    /// learner left, that checkpoint being past step 0.
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
    pub heavy: HeavyReport,
    pub malformed: MalformedReport,
    pub kills: KillReport,
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

    eprintln!(
        "bench faults: heavy messages on {} streams, {} of 63 MiB…",
        cfg.heavy_streams, cfg.oversize_messages
    );
    report.heavy = rt.block_on(heavy_messages(
        addr,
        pid,
        cfg.heavy_streams,
        cfg.oversize_messages,
    ))?;

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
        // The step of the newest checkpoint the killed learner left: the restarted one
        // must start there, not over.
        let saved = learner::trainer::resumable_step(&cluster.run_dir()).unwrap_or(0);
        let e = cluster.start_learner()?;
        // What the killed learner was writing is gone once the new one has started.
        report.kills.stray_temp_files += temp_files(&cluster.run_dir(), Some(e.pid));
        let up = Instant::now();
        let restarted = rt.block_on(status(e.grpc.unwrap_or(addr)))?;
        if saved > 0 && restarted.step >= saved {
            report.kills.learner_resumed += 1;
        }
        let first = restarted.version;
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
                        common::telemetry::scrape(m, "qd_actor_weight_version", &[])
                            .is_some_and(|v| v >= first as f64)
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
