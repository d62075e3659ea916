//! The distributed service with real processes on loopback: `qd learner`, `qd actor` and
//! `qd evaluator` with tiny models on the fixture corpus. Waits poll observable state
//! (the learner's Status RPC, the actors' /metrics, files) against a deadline.

#![allow(clippy::unwrap_used)]

mod faults;
mod limits;
mod refusals;
mod run;
mod training;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::telemetry::Endpoints;
use folk::dataset::{Dataset, Split};
use model::checkpoint::Checkpoint;
use qd_proto::learner_client::LearnerClient;
use qd_proto::{RegisterRequest, Role, Sample, StatusRequest, Trajectory, TrajectoryBatch};
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(180);

/// A qd process, killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for the process to exit; its status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "process did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Tiny models on the fixture corpus, and a config pointing at them.
struct Fixture {
    dir: tempfile::TempDir,
}

fn qd_ok(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_qd"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qd {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = testkit::fixture_dataset(dir.path());
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        let common = [
            "--data",
            data.to_str().unwrap(),
            "--batch-size",
            "8",
            "--no-progress",
            "--threads",
            "1",
        ];
        qd_ok(
            &[
                &[
                    "pretrain",
                    "--preset",
                    "tiny",
                    "--steps",
                    "30",
                    "--lr",
                    "0.01",
                    "--context",
                    "64",
                    "--out",
                    &p("pt"),
                ],
                &common[..],
            ]
            .concat(),
        );
        qd_ok(
            &[
                &[
                    "embedder",
                    "train",
                    "--steps",
                    "3",
                    "--out",
                    &p("emb.safetensors"),
                ],
                &common[..],
            ]
            .concat(),
        );
        qd_ok(
            &[
                &[
                    "judge",
                    "train",
                    "--steps",
                    "3",
                    "--out",
                    &p("judge.safetensors"),
                ],
                &common[..],
            ]
            .concat(),
        );
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name.toml`: the fixture's paths, loopback ports, tiny batches
    /// (`tests/support/service.toml`), and `extra`.
    fn config(&self, name: &str, extra: &str) -> PathBuf {
        let dir = self.dir.path().to_str().unwrap();
        let text = include_str!("../support/service.toml").replace("@DIR@", dir);
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, layered(&text, extra)).unwrap();
        path
    }

    fn spawn(&self, name: &str, role: &str, config: &Path, sets: &[String]) -> Proc {
        let log = self.path(&format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qd"));
        cmd.arg(role).arg("--config").arg(config);
        for s in sets {
            cmd.arg("--set").arg(s);
        }
        if role != "learner" {
            cmd.arg("--ready-file")
                .arg(self.path(&format!("{name}.endpoints.json")));
        }
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("RUST_LOG", "info")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    /// Actors `actor-1` … `actor-n` (seeded 1 … n) of the learner at `addr`.
    fn actors(&self, n: usize, config: &Path, addr: SocketAddr) -> Vec<Proc> {
        (1..=n)
            .map(|i| {
                self.spawn(
                    &format!("actor-{i}"),
                    "actor",
                    config,
                    &[
                        format!("client.learner=http://{addr}"),
                        format!("actor.seed={i}"),
                    ],
                )
            })
            .collect()
    }

    /// The learner's gRPC address, once it listens.
    fn learner_addr(&self, learner: &mut Proc) -> SocketAddr {
        let path = self.path("rl/endpoints.json");
        wait_until("the learner to listen", || {
            if let Some(s) = learner.child.try_wait().unwrap() {
                panic!("learner exited ({s}):\n{}", learner.log());
            }
            Endpoints::read(&path).ok().and_then(|e| e.grpc)
        })
    }

    fn metrics_addr(&self, name: &str) -> SocketAddr {
        let path = self.path(&format!("{name}.endpoints.json"));
        wait_until("a ready file", || {
            Endpoints::read(&path).ok().and_then(|e| e.metrics)
        })
    }
}

/// `base` with the sections and keys of `extra` layered over it (`extra` may name a
/// section `base` has; TOML wants each section once).
fn layered(base: &str, extra: &str) -> String {
    let mut merged: toml::Table = base.parse().unwrap();
    let over: toml::Table = extra.parse().unwrap_or_else(|e| panic!("{e}: {extra}"));
    for (key, value) in over {
        match (merged.get_mut(&key), value) {
            (Some(toml::Value::Table(section)), toml::Value::Table(keys)) => section.extend(keys),
            (_, value) => {
                merged.insert(key, value);
            }
        }
    }
    toml::to_string(&merged).unwrap()
}

/// Polls `f` until it gives a value or the deadline passes.
fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

type Client = LearnerClient<tonic::transport::Channel>;

fn client(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> Client {
    client_result(rt, addr).unwrap()
}

/// `authorization: Bearer <token>` on a request.
fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// [`with_token`], and the client id `Register` issued in `qd-actor-id`.
fn as_client<T>(msg: T, token: Option<&str>, id: u64) -> tonic::Request<T> {
    let mut r = with_token(msg, token);
    r.metadata_mut()
        .insert("qd-actor-id", id.to_string().parse().unwrap());
    r
}

/// Registers as an actor of the learner's own model; the id the learner issued.
fn register(rt: &tokio::runtime::Runtime, c: &mut Client, token: Option<&str>) -> u64 {
    let s = status(rt, c, token);
    let req = RegisterRequest {
        protocol_version: qd_proto::PROTOCOL_VERSION,
        model_config_hash: s.model_config_hash,
        model_config_json: String::new(),
        vocab_hash: s.vocab_hash,
        role: Role::Actor as i32,
        name: "test client".into(),
    };
    rt.block_on(c.register(with_token(req, token)))
        .unwrap()
        .into_inner()
        .actor_id
}

fn status(
    rt: &tokio::runtime::Runtime,
    c: &mut Client,
    token: Option<&str>,
) -> qd_proto::StatusResponse {
    rt.block_on(c.status(with_token(StatusRequest {}, token)))
        .unwrap()
        .into_inner()
}

/// Waits until the learner has taken `step` steps; its status then.
fn wait_for_step(
    rt: &tokio::runtime::Runtime,
    c: &mut Client,
    token: Option<&str>,
    step: u64,
    learner: &mut Proc,
) -> qd_proto::StatusResponse {
    wait_until(&format!("learner step {step}"), || {
        if let Some(s) = learner.child.try_wait().unwrap() {
            panic!("learner exited ({s}):\n{}", learner.log());
        }
        let s = status(rt, c, token);
        (s.step >= step).then_some(s)
    })
}

/// One sample of a process's `/metrics` page: `name` with (at least) these labels.
fn scrape(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    common::telemetry::scrape(addr, name, labels)
}

fn train_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn client_result(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
) -> Result<Client, tonic::transport::Error> {
    rt.block_on(LearnerClient::connect(format!("http://{addr}")))
}
