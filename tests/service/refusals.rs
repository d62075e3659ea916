//! What the learner refuses: malformed trajectories, missing tokens, incompatible
//! actors, and TLS with a token.

use super::*;

use actor::broadcast::{Assembler, Weights, MAX_WEIGHT_BYTES};
use qd_proto::{PushAck, WatchRequest, WeightChunk};
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Sends one batch on a `PushTrajectories` stream as client `id`; the learner's first
/// answer.
fn push(
    rt: &tokio::runtime::Runtime,
    c: &mut Client,
    batch: TrajectoryBatch,
    token: Option<&str>,
    id: u64,
) -> Result<Option<PushAck>, Status> {
    rt.block_on(async {
        let mut acks = c
            .push_trajectories(as_client(tokio_stream::iter(vec![batch]), token, id))
            .await?
            .into_inner();
        acks.message().await
    })
}

/// Subscribes with `WatchWeights` from version 0: the stream's first chunk and the first
/// whole version reassembled from it (refusals come back as they are).
fn watch_first_version(
    rt: &tokio::runtime::Runtime,
    c: &mut Client,
    token: Option<&str>,
    id: u64,
) -> Result<(WeightChunk, Weights), Status> {
    let watch = async {
        let mut chunks = c
            .watch_weights(as_client(WatchRequest { have_version: 0 }, token, id))
            .await?
            .into_inner();
        let mut assembler = Assembler::default();
        let mut first = None;
        loop {
            let chunk = chunks
                .message()
                .await?
                .expect("the weight stream ended before a whole version");
            first.get_or_insert_with(|| chunk.clone());
            if let Some(w) = assembler.push(chunk, MAX_WEIGHT_BYTES)? {
                return Ok((first.unwrap(), w));
            }
        }
    };
    rt.block_on(async { tokio::time::timeout(DEADLINE, watch).await })
        .expect("no whole weight version before the deadline")
}

/// The health service's answer for `service` ("" is the server as a whole).
fn health(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    service: &str,
    token: Option<&str>,
) -> Result<ServingStatus, Status> {
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut h = HealthClient::new(channel);
        let r = h
            .check(with_token(
                HealthCheckRequest {
                    service: service.into(),
                },
                token,
            ))
            .await?;
        Ok(r.into_inner().status())
    })
}

#[test]
fn malformed_trajectories_and_missing_tokens_are_refused() {
    let f = Fixture::new();
    let cfg = f.config("auth", "[auth]\ntoken = \"s3cret-0123456789ab\"\n");
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
    let token = Some("s3cret-0123456789ab");
    wait_for_step(&rt, &mut c, token, 2, &mut learner);
    let id = register(&rt, &mut c, token);

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
    // The same pair with another behaviour log-probability: another trajectory (the
    // learner trains each one once).
    let other = |k: u32| {
        let mut t = good.clone();
        t.samples[0].logprobs[0] = -1.0 - 0.001 * k as f32;
        t
    };
    let batch = |t: Trajectory, version: u64| TrajectoryBatch {
        version,
        sequence: 0,
        trajectories: vec![t],
    };

    // Every Learner RPC wants the token: none, a wrong one, a prefix of the right one and
    // the right one with more after it are all refused before the call is looked at.
    let m = Endpoints::read(&f.path("rl/endpoints.json"))
        .unwrap()
        .metrics
        .unwrap();
    let unauthenticated = || scrape(m, "qd_learner_unauthenticated_total", &[]).unwrap_or(0.0);
    let refused_before = unauthenticated();
    let wrong = [
        None,
        Some("wrong"),
        Some("s3cret-0123456789a"),
        Some("s3cret-0123456789ab2"),
    ];
    for t in wrong {
        let e = rt
            .block_on(c.status(with_token(StatusRequest {}, t)))
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::Unauthenticated,
            "Status, token {t:?}: {e:?}"
        );
        let e = rt
            .block_on(c.register(with_token(RegisterRequest::default(), t)))
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::Unauthenticated,
            "Register, token {t:?}: {e:?}"
        );
        match watch_first_version(&rt, &mut c, t, id) {
            Err(e) => assert_eq!(
                e.code(),
                Code::Unauthenticated,
                "WatchWeights, token {t:?}: {e:?}"
            ),
            Ok((_, w)) => panic!(
                "WatchWeights with token {t:?} streamed version {}",
                w.version
            ),
        }
        // A batch that is acknowledged with the token (below) is refused without it.
        let e = push(&rt, &mut c, batch(good.clone(), 1), t, id).unwrap_err();
        assert_eq!(
            e.code(),
            Code::Unauthenticated,
            "PushTrajectories, token {t:?}: {e:?}"
        );
    }
    // Each refusal is counted (before it is answered), once.
    assert_eq!(unauthenticated(), refused_before + 4.0 * wrong.len() as f64);

    // With the token, WatchWeights streams a whole version: in order from offset 0, with
    // its checksum, and the checkpoint inside is the learner's model.
    let (first, w) = watch_first_version(&rt, &mut c, token, id).unwrap();
    assert_eq!(first.offset, 0, "{first:?}");
    assert!(first.version >= 1 && !first.data.is_empty(), "{first:?}");
    assert_eq!(first.total_len, w.blob.len() as u64);
    assert!(
        first.checksum.len() == 8 && first.checksum.bytes().all(|b| b.is_ascii_hexdigit()),
        "{first:?}"
    );
    let s = status(&rt, &mut c, token);
    let ck = w.checkpoint().unwrap();
    assert_eq!((ck.meta.version, ck.meta.step), (w.version, w.step));
    assert!(w.version <= s.version, "{s:?}");
    assert_eq!(ck.meta.config.hash(), s.model_config_hash);
    assert_eq!(ck.meta.vocab_hash, s.vocab_hash);

    // The health service answers probes without a token (and ignores a wrong one).
    for t in [None, Some("wrong")] {
        for service in ["", "qd.v1.Learner"] {
            assert_eq!(
                health(&rt, addr, service, t).unwrap(),
                ServingStatus::Serving,
                "health of {service:?} with token {t:?}"
            );
        }
    }

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
    let mut t = good.clone();
    t.samples[0].logprobs[0] = -3.4e38;
    cases.push(("a log-probability no sampler records", batch(t, 1)));
    for (what, b) in cases {
        match push(&rt, &mut c, b, token, id) {
            // 10,000 tokens also exceed the request limit the batch shape sets: refused
            // at their length, before validation.
            Err(e) if what == "sample longer than the context" => assert!(
                matches!(e.code(), Code::InvalidArgument | Code::OutOfRange),
                "{what}: {e:?}"
            ),
            Err(e) => assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}"),
            Ok(ack) => panic!("{what} was accepted: {ack:?}"),
        }
    }
    // Streams need an id Register issued: none, 0 and one never issued are refused.
    for bad in [None, Some(0), Some(id + 1_000)] {
        let e = rt
            .block_on(async {
                let msg = tokio_stream::iter(vec![batch(good.clone(), 1)]);
                match bad {
                    None => c.push_trajectories(with_token(msg, token)).await,
                    Some(b) => c.push_trajectories(as_client(msg, token, b)).await,
                }
            })
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "id {bad:?}: {e:?}");
        if let Some(b) = bad {
            let e = watch_first_version(&rt, &mut c, token, b).unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "id {b}: {e:?}");
        }
    }
    // A well-formed batch of the current version from the same client is acknowledged.
    let now = status(&rt, &mut c, token).version;
    let ack = push(&rt, &mut c, batch(other(1), now), token, id)
        .unwrap()
        .unwrap();
    assert_eq!(ack.accepted, 1);
    // The same trajectory again, on a new stream and under a new version: acknowledged,
    // not queued (a `duplicate`).
    let again = wait_until("a newer version", || {
        let v = status(&rt, &mut c, token).version;
        (v > now).then_some(v)
    });
    let ack = push(&rt, &mut c, batch(other(1), again), token, id)
        .unwrap()
        .unwrap();
    assert_eq!(ack.accepted, 0);
    // One too old to train on is refused at intake (it never takes a queue slot), and
    // the stream goes on.
    let stale_before = status(&rt, &mut c, token).trajectories_stale;
    let old = wait_until("the learner to be past max_staleness", || {
        let s = status(&rt, &mut c, token);
        (s.version > 1 + 4).then_some(s.version)
    });
    let (stale, fresh) = rt.block_on(async {
        let mut acks = c
            .push_trajectories(as_client(
                tokio_stream::iter(vec![
                    TrajectoryBatch {
                        sequence: 1,
                        ..batch(good.clone(), 1)
                    },
                    TrajectoryBatch {
                        sequence: 2,
                        ..batch(other(2), old)
                    },
                ]),
                token,
                id,
            ))
            .await
            .unwrap()
            .into_inner();
        (acks.message().await, acks.message().await)
    });
    assert_eq!(stale.unwrap().unwrap().accepted, 0);
    assert_eq!(fresh.unwrap().unwrap().accepted, 1);
    assert!(status(&rt, &mut c, token).trajectories_stale > stale_before);
    // The same batch twice on one stream: acknowledged once, the replay refused.
    let twice = TrajectoryBatch {
        sequence: 7,
        ..batch(other(3), status(&rt, &mut c, token).version)
    };
    let (first, second) = rt.block_on(async {
        let mut acks = c
            .push_trajectories(as_client(
                tokio_stream::iter(vec![twice.clone(), twice]),
                token,
                id,
            ))
            .await
            .unwrap()
            .into_inner();
        (acks.message().await, acks.message().await)
    });
    let first = first.unwrap().unwrap();
    assert_eq!((first.sequence, first.accepted), (7, 1));
    let e = second.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("trained on once"), "{e:?}");

    let s = status(&rt, &mut c, token);
    assert!(s.trajectories_rejected >= 10, "{s:?}");
    wait_for_step(&rt, &mut c, token, s.step + 3, &mut learner);
    for reason in [
        "duplicate",
        "token",
        "length",
        "reward",
        "version",
        "unknown_prompt",
        "oversize",
        "samples",
        "logprob",
        "stale",
    ] {
        let v = scrape(
            m,
            "qd_learner_trajectories_dropped_total",
            &[("reason", reason)],
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

#[test]
fn an_actor_whose_learner_is_gone_gives_up() {
    let f = Fixture::new();
    let cfg = f.config("gone", "");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut actor = f.spawn(
        "actor-alone",
        "actor",
        &cfg,
        &[
            format!("client.learner=http://127.0.0.1:{port}"),
            "client.give_up_after_s=2".into(),
        ],
    );
    // It retries for two seconds, then exits with an error saying why.
    let status = actor.wait();
    assert!(!status.success());
    let log = actor.log();
    assert!(
        log.contains("giving up") && log.contains("give_up_after_s"),
        "{log}"
    );
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
            "[auth]\ntoken = \"s3cret-0123456789ab\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display(),
        ),
    );
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let _actor = f.spawn(
        "actor-1",
        "actor",
        &cfg,
        &[
            format!("client.learner=https://localhost:{}", addr.port()),
            format!("auth.tls_ca={}", ca.display()),
        ],
    );
    // The actor connects over TLS with the token: the learner trains on its trajectories.
    let rt = runtime();
    let mut c = LearnerClient::new(tls_channel(&rt, addr.port(), &ca).unwrap());
    let token = Some("s3cret-0123456789ab");
    wait_for_step(&rt, &mut c, token, 3, &mut learner);

    // Over TLS the token is still wanted: the handshake is not an authentication.
    for t in [None, Some("wrong")] {
        let e = rt
            .block_on(c.status(with_token(StatusRequest {}, t)))
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "token {t:?}: {e:?}");
        assert!(
            !from_transport(&e),
            "the learner's answer, not the transport's: {e:?}"
        );
    }

    // A client trusting another CA refuses the learner's certificate in the handshake:
    // connecting fails at the transport, no call is made. (rcgen gives both CAs the same
    // name, so rustls reports a bad signature rather than an unknown issuer.)
    let other = f.path("other-ca");
    std::fs::create_dir(&other).unwrap();
    let (other_ca, _, _) = write_tls_files(&other);
    let e = tls_channel(&rt, addr.port(), &other_ca).unwrap_err();
    let why = error_chain(&e);
    assert!(
        why.contains("invalid peer certificate"),
        "not a certificate failure: {why}"
    );
    // Lazily connected, a call with the right token fails for the same reason, as
    // UNAVAILABLE from the client's transport: the learner never answered it.
    let lazy = rt.block_on(async { tls_endpoint(addr.port(), &other_ca).connect_lazy() });
    let e = rt
        .block_on(LearnerClient::new(lazy).status(with_token(StatusRequest {}, token)))
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(from_transport(&e), "{e:?}");
    assert!(
        error_chain(&e).contains("invalid peer certificate"),
        "{e:?}"
    );

    // A plaintext client against the TLS port: its HTTP/2 preface meets a TLS server,
    // which drops the connection (or its TLS alert reads as a malformed frame). The call
    // fails in the client's transport, never as a gRPC status from the learner.
    match client_result(&rt, addr) {
        // Connecting does not wait for the server's first frame, but if it did, this is
        // the same failure, seen earlier.
        Err(_) => {}
        Ok(mut plain) => {
            let e = rt
                .block_on(plain.status(with_token(StatusRequest {}, token)))
                .unwrap_err();
            assert!(
                matches!(e.code(), Code::Unavailable | Code::Unknown | Code::Internal),
                "{e:?}"
            );
            assert!(from_transport(&e), "not a transport failure: {e:?}");
        }
    }
    // The learner is unharmed.
    assert!(learner.child.try_wait().unwrap().is_none());
    status(&rt, &mut c, token);
}

#[test]
fn mutual_tls_wants_a_client_certificate() {
    let f = Fixture::new();
    // The certificates a deployment uses, as `qd tls init` writes them.
    let tls = f.path("tls");
    let init = Command::new(env!("CARGO_BIN_EXE_qd"))
        .args(["tls", "init", "--name", "localhost", "--out"])
        .arg(&tls)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let file = |name: &str| tls.join(name).display().to_string();
    let cfg = f.config(
        "mtls",
        &format!(
            "[auth]\ntoken = \"s3cret-0123456789ab\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\n",
            file("learner.pem"),
            file("learner-key.pem"),
            file("ca.pem"),
        ),
    );
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let token = Some("s3cret-0123456789ab");
    let rt = runtime();

    // Without a client certificate: refused in the handshake, never answered. What the
    // client sees depends on timing (the connection fails, or the first call fails with
    // rustls' CertificateRequired alert, the connection closed or a broken pipe): always
    // its transport's failure, never a status from the learner.
    if let Ok(ch) = tls_channel(&rt, addr.port(), &tls.join("ca.pem")) {
        let e = rt
            .block_on(LearnerClient::new(ch).status(with_token(StatusRequest {}, token)))
            .unwrap_err();
        assert!(from_transport(&e), "the learner answered: {e:?}");
    }
    // With the one `qd tls init` issued: served.
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(tls.join("client.pem")).unwrap(),
        std::fs::read(tls.join("client-key.pem")).unwrap(),
    );
    let endpoint = tls_endpoint(addr.port(), &tls.join("ca.pem"));
    let tls_config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(tls.join("ca.pem")).unwrap(),
        ))
        .domain_name("localhost")
        .identity(identity);
    let ch = rt
        .block_on(endpoint.tls_config(tls_config).unwrap().connect())
        .unwrap();
    let mut c = LearnerClient::new(ch);
    status(&rt, &mut c, token);

    // The health probe the containers run, over TLS with the client certificate; without
    // it, unhealthy.
    let probe = |cert: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qd"));
        cmd.args([
            "health",
            &format!("grpcs://127.0.0.1:{}", addr.port()),
            "--ca",
        ])
        .arg(tls.join("ca.pem"));
        if cert {
            cmd.arg("--cert")
                .arg(tls.join("client.pem"))
                .arg("--key")
                .arg(tls.join("client-key.pem"));
        }
        cmd.output().unwrap().status.success()
    };
    assert!(probe(true));
    assert!(!probe(false));

    // An actor configured with it trains.
    let _actor = f.spawn(
        "actor-1",
        "actor",
        &cfg,
        &[
            format!("client.learner=https://localhost:{}", addr.port()),
            format!("auth.tls_ca={}", file("ca.pem")),
            format!("auth.tls_client_cert={}", file("client.pem")),
            format!("auth.tls_client_key={}", file("client-key.pem")),
        ],
    );
    wait_for_step(&rt, &mut c, token, 2, &mut learner);
}

/// An endpoint for `https://localhost:port` trusting the CA in `ca`.
fn tls_endpoint(port: u16, ca: &Path) -> tonic::transport::Endpoint {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(ca).unwrap(),
        ))
        .domain_name("localhost");
    tonic::transport::Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
}

/// Connects (the TLS handshake included) to `https://localhost:port` trusting `ca`.
fn tls_channel(
    rt: &tokio::runtime::Runtime,
    port: u16,
    ca: &Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    rt.block_on(tls_endpoint(port, ca).connect())
}

/// Whether a call's error came from the client's transport (connection, TLS, HTTP/2)
/// rather than from a `grpc-status` the server sent.
fn from_transport(e: &Status) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<tonic::transport::Error>())
}

/// An error and its sources, as one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(e) = source {
        s.push_str(&format!(": {e}"));
        source = e.source();
    }
    s
}
