//! What the learner refuses: malformed trajectories, missing tokens, incompatible
//! actors, and TLS with a token.

use super::*;

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
