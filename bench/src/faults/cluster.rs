//! The campaign's processes (a learner and actors on loopback, killed when dropped),
//! what they report (resident memory, one metric, temporary files) and the gRPC helpers
//! the attacks share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use common::telemetry::Endpoints;
use qd_proto::learner_client::LearnerClient;
use qd_proto::{RegisterRequest, Role, StatusRequest, StatusResponse};

/// A qd process, killed when dropped.
pub(super) struct Proc {
    pub(super) child: Child,
    pub(super) log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Proc {
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes of the campaign and where they are.
pub(super) struct Cluster {
    pub(super) dir: tempfile::TempDir,
    pub(super) config: Option<PathBuf>,
    pub(super) sets: Vec<String>,
    pub(super) learner: Option<Proc>,
    pub(super) actors: Vec<Proc>,
    pub(super) learner_logs: Vec<PathBuf>,
}

pub(super) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

impl Cluster {
    pub(super) fn spawn(
        &self,
        name: &str,
        role: &str,
        sets: &[String],
        args: &[&Path],
    ) -> Result<Proc> {
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

    pub(super) fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Starts (or restarts) the learner; its endpoints once it listens.
    pub(super) fn start_learner(&mut self) -> Result<Endpoints> {
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
    pub(super) fn start_actor(&mut self, i: usize) -> Result<SocketAddr> {
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
pub(super) fn wait<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
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
pub(super) async fn status(addr: SocketAddr) -> Result<StatusResponse> {
    let mut c = LearnerClient::connect(format!("http://{addr}")).await?;
    Ok(c.status(StatusRequest {}).await?.into_inner())
}

pub(super) type Client = LearnerClient<tonic::transport::Channel>;

pub(super) async fn register(c: &mut Client, s: &StatusResponse) -> Result<u64> {
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

pub(super) fn tagged<T>(msg: T, id: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = id.to_string().parse() {
        r.metadata_mut().insert("qd-actor-id", v);
    }
    r
}

/// Temporary files in the run folder or its checkpoints that no live process (`live`,
/// the learner's pid) is writing.
pub(super) fn temp_files(run_dir: &Path, live: Option<u32>) -> usize {
    [run_dir.to_path_buf(), run_dir.join("checkpoints")]
        .iter()
        .flat_map(|d| model::fsutil::temp_files(d))
        .filter(|(_, pid)| live.is_none() || *pid != live)
        .count()
}
