//! The distributed service with real processes on loopback: `qd learner`, `qd actor` and
//! `qd evaluator` with tiny models on the fixture corpus. Waits poll observable state
//! (the learner's Status RPC, the actors' /metrics, files) against a deadline.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
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

    /// Writes `name.toml`: the fixture's paths, loopback ports, tiny batches, and `extra`.
    fn config(&self, name: &str, extra: &str) -> PathBuf {
        let p = |n: &str| self.path(n).to_str().unwrap().to_string();
        let text = format!(
            r#"[paths]
data = "{}"
base = "{}"
embedder = "{}"
judge = "{}"
run_dir = "{}"

[learner]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
batch_prompts = 4
queue_capacity = 16
lr = 0.001
warmup_steps = 2
max_steps = 0
checkpoint_every = 5
threads = 1

[client]
backoff_initial_ms = 50
backoff_max_ms = 500

[actor]
batch_prompts = 4
max_new_tokens = 32
metrics_listen = "127.0.0.1:0"
threads = 1

[evaluator]
prompts = 4
every_versions = 5
max_new_tokens = 32
metrics_listen = "127.0.0.1:0"
threads = 1
{extra}
"#,
            p("folk"),
            p("pt/last.safetensors"),
            p("emb.safetensors"),
            p("judge.safetensors"),
            p("rl"),
        );
        // `extra` may repeat a section header; TOML wants each once, so merge by hand.
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, merge_sections(&text)).unwrap();
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

/// Joins repeated `[section]` blocks so each section appears once.
fn merge_sections(text: &str) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut body: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            current = t.to_string();
            if !order.contains(&current) {
                order.push(current.clone());
            }
        } else if !t.is_empty() {
            let lines = body.entry(current.clone()).or_default();
            let key = t.split('=').next().unwrap_or("").trim().to_string();
            lines.retain(|l| l.split('=').next().unwrap_or("").trim() != key);
            lines.push(t.to_string());
        }
    }
    order
        .iter()
        .map(|s| {
            format!(
                "{s}\n{}\n",
                body.get(s).map(|l| l.join("\n")).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
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

/// One sample of a Prometheus text page (`name` with exactly these labels), if present.
fn scrape(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut page = String::new();
    s.read_to_string(&mut page).ok()?;
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

fn train_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn learner_and_two_actors_train_publish_and_distil() {
    let f = Fixture::new();
    let cfg = f.config("run", "");
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let actors: Vec<Proc> = (1..=2)
        .map(|i| {
            f.spawn(
                &format!("actor-{i}"),
                "actor",
                &cfg,
                &[
                    format!("client.learner=http://{addr}"),
                    format!("actor.seed={i}"),
                ],
            )
        })
        .collect();
    let rt = runtime();
    let mut c = client(&rt, addr);
    let s = wait_for_step(&rt, &mut c, None, 24, &mut learner);
    assert!(s.version > 20, "the student is published every step: {s:?}");
    assert_eq!(s.trajectories_rejected, 0);
    // Every actor receives the version published now, or a newer one.
    let v = s.version as f64;
    for i in 1..=2 {
        let m = f.metrics_addr(&format!("actor-{i}"));
        wait_until("an actor to load the newest weights", || {
            scrape(m, "qd_actor_weight_version").filter(|&w| w >= v)
        });
    }
    learner.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(learner.wait().success(), "{}", learner.log());
    assert!(
        learner.log().contains("checkpoint written"),
        "{}",
        learner.log()
    );

    let log = train_log(&f.path("rl/train.jsonl"));
    assert!(log.len() >= 24);
    let versions: Vec<u64> = log.iter().map(|l| l["version"].as_u64().unwrap()).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions increase: {versions:?}"
    );
    let kl = |ls: &[serde_json::Value]| {
        ls.iter().map(|l| l["kl"].as_f64().unwrap()).sum::<f64>() / ls.len() as f64
    };
    let (start, end) = (kl(&log[..4]), kl(&log[log.len() - 4..]));
    assert!(
        end < start,
        "with β = 0 KL(student‖teacher) falls: {start} → {end}"
    );
    for a in &actors {
        assert!(!a.log().contains("panicked"), "{}", a.log());
    }
}

#[test]
fn actors_may_die_and_join_at_any_time() {
    let f = Fixture::new();
    let cfg = f.config("run", "");
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let url = format!("client.learner=http://{addr}");
    let a1 = f.spawn(
        "actor-1",
        "actor",
        &cfg,
        &[url.clone(), "actor.seed=1".into()],
    );
    let _a2 = f.spawn(
        "actor-2",
        "actor",
        &cfg,
        &[url.clone(), "actor.seed=2".into()],
    );
    let rt = runtime();
    let mut c = client(&rt, addr);
    wait_for_step(&rt, &mut c, None, 4, &mut learner);
    a1.signal(nix::sys::signal::Signal::SIGKILL);
    drop(a1);
    let s = status(&rt, &mut c, None);
    wait_for_step(&rt, &mut c, None, s.step + 6, &mut learner);
    wait_until("the dead actor to be forgotten", || {
        (status(&rt, &mut c, None).actors_connected == 1).then_some(())
    });
    let _a3 = f.spawn("actor-3", "actor", &cfg, &[url, "actor.seed=3".into()]);
    let v = status(&rt, &mut c, None).version as f64;
    let m = f.metrics_addr("actor-3");
    wait_until("the new actor to catch up", || {
        scrape(m, "qd_actor_weight_version").filter(|&w| w >= v)
    });
    wait_until("two actors connected", || {
        (status(&rt, &mut c, None).actors_connected == 2).then_some(())
    });
    assert!(
        learner.child.try_wait().unwrap().is_none(),
        "{}",
        learner.log()
    );
    assert!(!learner.log().contains("ERROR"), "{}", learner.log());
}

#[test]
fn a_killed_learner_resumes_and_actors_reconnect_by_themselves() {
    let f = Fixture::new();
    // A fixed port, so that the restarted learner is where the actor looks.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = f.config("run", &format!("[learner]\nlisten = \"127.0.0.1:{port}\"\ncheckpoint_every = 3\n[client]\nlearner = \"http://127.0.0.1:{port}\"\n"));
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let actor = f.spawn("actor-1", "actor", &cfg, &[]);
    let rt = runtime();
    let mut c = client(&rt, addr);
    wait_for_step(&rt, &mut c, None, 8, &mut learner);
    learner.signal(nix::sys::signal::Signal::SIGKILL);
    learner.wait();
    let newest = learner::trainer::checkpoints(&f.path("rl"))
        .into_iter()
        .next()
        .unwrap();
    let saved = Checkpoint::read(&newest).unwrap().meta;
    assert!(saved.step >= 6 && saved.step % 3 == 0, "{saved:?}");
    assert_eq!(saved.optimizer_step, Some(saved.step as i64));

    std::fs::remove_file(f.path("rl/endpoints.json")).unwrap();
    let mut learner = f.spawn("learner-2", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let mut c = client(&rt, addr);
    let s = status(&rt, &mut c, None);
    assert!(
        s.step >= saved.step && s.version > saved.version,
        "resumed: {s:?} from {saved:?}"
    );
    assert!(
        learner.log().contains("resumed from checkpoint"),
        "{}",
        learner.log()
    );
    // Only the actor, never restarted, can make the learner step again.
    let s = wait_for_step(&rt, &mut c, None, saved.step + 4, &mut learner);
    assert!(s.actors_connected >= 1);
    learner.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(learner.wait().success(), "{}", learner.log());
    let last = Checkpoint::read(&learner::trainer::checkpoints(&f.path("rl"))[0])
        .unwrap()
        .meta;
    assert!(last.step >= saved.step + 4);
    assert_eq!(
        last.optimizer_step,
        Some(last.step as i64),
        "the optimizer's step continued"
    );
    assert!(
        actor.log().contains("connection to the learner lost"),
        "{}",
        actor.log()
    );
    assert!(!actor.log().contains("panicked"), "{}", actor.log());
}

#[test]
fn malformed_trajectories_and_missing_tokens_are_refused() {
    let f = Fixture::new();
    let cfg = f.config("auth", "[auth]\ntoken = \"s3cret\"\n");
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let _actor = f.spawn(
        "actor-1",
        "actor",
        &cfg,
        &[format!("client.learner=http://{addr}")],
    );
    let rt = runtime();
    let mut c = client(&rt, addr);
    let token = Some("s3cret");

    for t in [None, Some("wrong")] {
        let e = rt
            .block_on(c.status(with_token(StatusRequest {}, t)))
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    }
    let e = rt
        .block_on(c.register(RegisterRequest::default()))
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    wait_for_step(&rt, &mut c, token, 2, &mut learner);

    let ds = Dataset::load(&f.path("folk")).unwrap();
    let prompt = ds.split(Split::Train).next().unwrap().prompt.clone();
    let tune_id = ds.vocab.tune_ids().next().unwrap();
    let sample = |tokens: Vec<u32>| Sample {
        logprobs: vec![-1.0; tokens.len()],
        tokens,
    };
    let good = Trajectory {
        prompt: prompt.clone(),
        reward: 0.5,
        samples: vec![sample(vec![tune_id, 2]), sample(vec![tune_id, tune_id, 2])],
    };
    let batch = |t: Trajectory, version: u64| TrajectoryBatch {
        version,
        sequence: 0,
        trajectories: vec![t],
    };
    let mut cases: Vec<(&str, TrajectoryBatch)> = Vec::new();
    let mut t = good.clone();
    t.samples[0].tokens[0] = 99_999;
    cases.push(("token id out of range", batch(t, 1)));
    let mut t = good.clone();
    t.samples[1].tokens[0] = prompt[0];
    cases.push(("a prompt word as a tune token", batch(t, 1)));
    let mut t = good.clone();
    t.samples[0].logprobs.pop();
    cases.push(("fewer log-probs than tokens", batch(t, 1)));
    let mut t = good.clone();
    t.reward = f32::NAN;
    cases.push(("NaN reward", batch(t, 1)));
    let mut t = good.clone();
    t.reward = 2.5;
    cases.push(("reward above 2", batch(t, 1)));
    cases.push(("version from the future", batch(good.clone(), 1_000_000)));
    let mut t = good.clone();
    t.prompt = vec![3, 3, 3, 3, 3, 3, 3];
    cases.push(("unknown prompt", batch(t, 1)));
    let mut t = good.clone();
    t.samples[0] = sample(vec![tune_id; 10_000]);
    cases.push(("sample longer than the context", batch(t, 1)));
    cases.push((
        "more trajectories than the queue holds",
        TrajectoryBatch {
            version: 1,
            sequence: 0,
            trajectories: vec![good.clone(); 17],
        },
    ));
    let mut t = good.clone();
    t.samples.pop();
    cases.push(("one sample instead of two", batch(t, 1)));
    for (what, b) in cases {
        let r = rt.block_on(async {
            let mut acks = c
                .push_trajectories(with_token(tokio_stream::iter(vec![b]), token))
                .await?
                .into_inner();
            acks.message().await
        });
        match r {
            Err(e) => assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}"),
            Ok(ack) => panic!("{what} was accepted: {ack:?}"),
        }
    }
    // A well-formed batch from the same client is acknowledged.
    let ack = rt
        .block_on(async {
            let mut acks = c
                .push_trajectories(with_token(
                    tokio_stream::iter(vec![batch(good.clone(), 1)]),
                    token,
                ))
                .await?
                .into_inner();
            acks.message().await
        })
        .unwrap()
        .unwrap();
    assert_eq!(ack.accepted, 1);

    let s = status(&rt, &mut c, token);
    assert!(s.trajectories_rejected >= 10, "{s:?}");
    wait_for_step(&rt, &mut c, token, s.step + 3, &mut learner);
    let m = Endpoints::read(&f.path("rl/endpoints.json"))
        .unwrap()
        .metrics
        .unwrap();
    for reason in [
        "token",
        "length",
        "reward",
        "version",
        "unknown_prompt",
        "oversize",
        "samples",
    ] {
        let v = scrape(
            m,
            &format!("qd_learner_trajectories_dropped_total{{reason=\"{reason}\"}}"),
        );
        assert!(v.is_some_and(|v| v >= 1.0), "no {reason} rejection counted");
    }
    assert!(!learner.log().contains("panicked"));
}

#[test]
fn an_incompatible_actor_is_refused_at_register() {
    let f = Fixture::new();
    let data = f.path("folk");
    qd_ok(&[
        "pretrain",
        "--preset",
        "small",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--context",
        "32",
        "--no-progress",
        "--threads",
        "1",
        "--data",
        data.to_str().unwrap(),
        "--out",
        f.path("small").to_str().unwrap(),
    ]);
    let cfg = f.config("run", "");
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let mut actor = f.spawn(
        "actor-small",
        "actor",
        &cfg,
        &[
            format!("client.learner=http://{addr}"),
            format!("paths.base={}", f.path("small/last.safetensors").display()),
        ],
    );
    let status = actor.wait();
    assert!(!status.success());
    let log = actor.log();
    assert!(log.contains("refused") && log.contains("d_model"), "{log}");

    let rt = runtime();
    let mut c = client(&rt, addr);
    let base = Checkpoint::read(&f.path("pt/last.safetensors"))
        .unwrap()
        .meta;
    let good = RegisterRequest {
        protocol_version: qd_proto::PROTOCOL_VERSION,
        model_config_hash: base.config.hash(),
        model_config_json: serde_json::to_string(&base.config).unwrap(),
        vocab_hash: base.vocab_hash.clone(),
        role: Role::Actor as i32,
        name: "test".into(),
    };
    assert!(rt.block_on(c.register(good.clone())).is_ok());
    let refused = |r: RegisterRequest| {
        rt.block_on(async { c.clone().register(r).await })
            .unwrap_err()
    };
    let e = refused(RegisterRequest {
        vocab_hash: "0000".into(),
        ..good.clone()
    });
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("vocabulary"), "{e:?}");
    let e = refused(RegisterRequest {
        protocol_version: 99,
        ..good.clone()
    });
    assert!(e.message().contains("protocol version 99"), "{e:?}");
    assert!(learner.child.try_wait().unwrap().is_none());
}

/// A CA and a `localhost` certificate it signed, as PEM files in `dir`: (ca, cert, key).
fn write_tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[test]
fn tls_and_token_together() {
    let f = Fixture::new();
    let (ca, cert, key) = write_tls_files(f.dir.path());
    let cfg = f.config(
        "tls",
        &format!(
            "[auth]\ntoken = \"s3cret\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\n",
            cert.display(),
            key.display(),
            ca.display()
        ),
    );
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let _actor = f.spawn(
        "actor-1",
        "actor",
        &cfg,
        &[format!("client.learner=https://localhost:{}", addr.port())],
    );
    // The actor connects over TLS with the token: the learner trains on its trajectories.
    let rt = runtime();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(&ca).unwrap(),
        ))
        .domain_name("localhost");
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    });
    let mut c = LearnerClient::new(channel);
    wait_for_step(&rt, &mut c, Some("s3cret"), 3, &mut learner);
    // A plaintext client gets nowhere.
    let mut plain = client_result(&rt, addr);
    assert!(
        plain.as_mut().is_err()
            || rt
                .block_on(
                    plain
                        .unwrap()
                        .status(with_token(StatusRequest {}, Some("s3cret")))
                )
                .is_err()
    );
}

fn client_result(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
) -> Result<Client, tonic::transport::Error> {
    rt.block_on(LearnerClient::connect(format!("http://{addr}")))
}

#[test]
fn qd_run_trains_to_its_budget_and_restarts_a_dead_actor() {
    let f = Fixture::new();
    let cfg = f.config(
        "run",
        "[learner]\nmax_steps = 150\n[run]\nactors = 2\nevaluator = true\n",
    );
    let log = f.path("qd-run.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut run = Proc {
        child: Command::new(env!("CARGO_BIN_EXE_qd"))
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
        log,
    };
    // Kill actor 1 as soon as it is up; `qd run` starts it again.
    let ready = f.path("rl/actor-1.endpoints.json");
    let first = wait_until("actor 1", || Endpoints::read(&ready).ok()).pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("actor 1 to be restarted", || {
        Endpoints::read(&ready).ok().filter(|e| e.pid != first)
    });
    assert!(run.wait().success(), "{}", run.log());
    let text = run.log();
    assert!(
        text.contains("[actor-1]") && text.contains("[learner]") && text.contains("[evaluator]")
    );
    assert!(text.contains("starting it again"), "{text}");
    assert!(text.contains("student weights:"), "{text}");
    assert_eq!(train_log(&f.path("rl/train.jsonl")).len(), 150);
    assert!(Checkpoint::read(&f.path("rl/student.safetensors")).is_ok());
    assert!(
        std::fs::read_to_string(f.path("rl/eval.jsonl"))
            .unwrap()
            .lines()
            .count()
            >= 1
    );
}
