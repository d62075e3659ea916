//! What a client cannot make the learner hold: streams beyond the limits are refused,
//! silent trajectory streams are ended, connections beyond the limit are closed, and
//! messages that do not decode, or are too large, get a status (never an OK end). A
//! learner on a reachable port without a token does not start.

use super::*;

use qd_proto::{PushAck, WatchRequest, WeightChunk};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// The metrics endpoint of the learner the fixture runs.
fn metrics_addr(f: &Fixture) -> SocketAddr {
    Endpoints::read(&f.path("rl/endpoints.json"))
        .unwrap()
        .metrics
        .unwrap()
}

fn refusals(m: SocketAddr, reason: &str) -> f64 {
    scrape(m, "qd_learner_streams_refused_total", &[("reason", reason)]).unwrap_or(0.0)
}

/// Opens a trajectory stream that sends nothing until `tx` does; the acknowledgements.
fn silent_push(
    rt: &tokio::runtime::Runtime,
    c: &mut Client,
    id: u64,
) -> (
    tokio::sync::mpsc::Sender<TrajectoryBatch>,
    Result<tonic::Streaming<PushAck>, Status>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let acks = rt
        .block_on(c.push_trajectories(as_client(ReceiverStream::new(rx), None, id)))
        .map(tonic::Response::into_inner);
    (tx, acks)
}

/// Opens a weight stream and reads its first chunk.
fn watch(
    rt: &tokio::runtime::Runtime,
    c: &mut Client,
    id: u64,
) -> Result<(tonic::Streaming<WeightChunk>, WeightChunk), Status> {
    rt.block_on(async {
        let mut s = c
            .watch_weights(as_client(WatchRequest { have_version: 0 }, None, id))
            .await?
            .into_inner();
        let first = s.message().await?.expect("the weight stream ended at once");
        Ok((s, first))
    })
}

#[test]
fn streams_beyond_the_limits_are_refused_and_silent_ones_ended() {
    let f = Fixture::new();
    let cfg = f.config(
        "limits",
        "[limits]\nmax_watchers = 2\nmax_watchers_per_client = 1\nmax_push_streams_per_client = 2\nidle_push_timeout_s = 1\n",
    );
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let m = metrics_addr(&f);
    let rt = runtime();
    let mut c = client(&rt, addr);
    let id = register(&rt, &mut c, None);

    // Two trajectory streams per client; the third is refused while they are open.
    let (_tx1, first) = silent_push(&rt, &mut c, id);
    let (_tx2, second) = silent_push(&rt, &mut c, id);
    let (mut first, mut second) = (first.unwrap(), second.unwrap());
    let (_tx3, third) = silent_push(&rt, &mut c, id);
    let e = third.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("max_push_streams_per_client"), "{e:?}");
    // Another client has its own two.
    let other = register(&rt, &mut c, None);
    let (_tx4, fourth) = silent_push(&rt, &mut c, other);
    let mut fourth = fourth.unwrap();
    // Silent for longer than idle_push_timeout_s: each is ended with a status...
    for s in [&mut first, &mut second, &mut fourth] {
        let e = rt.block_on(s.message()).unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    }
    // ... and its slot is free again.
    let (_tx5, fifth) = wait_until("a trajectory stream slot to be released", || {
        let (tx, r) = silent_push(&rt, &mut c, id);
        r.is_ok().then_some((tx, r))
    });
    let e = rt.block_on(fifth.unwrap().message()).unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");

    // One weight stream per client, two all clients together; beyond either, refused,
    // and a closed one makes room.
    let (w1, _) = watch(&rt, &mut c, id).unwrap();
    let e = watch(&rt, &mut c, id).unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("max_watchers_per_client"), "{e:?}");
    let (_w2, _) = watch(&rt, &mut c, other).unwrap();
    let third_client = register(&rt, &mut c, None);
    let e = watch(&rt, &mut c, third_client).unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("limits.max_watchers)"), "{e:?}");
    drop(w1);
    let (_w3, chunk) = wait_until("a weight stream slot to be released", || {
        watch(&rt, &mut c, id).ok()
    });
    assert!(chunk.version >= 1);
    assert_eq!(status(&rt, &mut c, None).actors_connected, 2);

    assert!(refusals(m, "client_push_limit") >= 1.0);
    assert!(refusals(m, "idle") >= 4.0);
    assert!(refusals(m, "watcher_limit") >= 1.0);
    assert!(refusals(m, "client_watch_limit") >= 1.0);
    assert!(!learner.log().contains("panicked"), "{}", learner.log());
}

#[test]
fn connections_beyond_the_limit_are_closed_silent_ones_first() {
    let f = Fixture::new();
    let cfg = f.config("limits", "[limits]\nmax_connections = 2\n");
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let m = metrics_addr(&f);
    let rt = runtime();
    // One gRPC client and one raw TCP connection that never speaks hold both slots.
    let mut c = client(&rt, addr);
    status(&rt, &mut c, None);
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    wait_until("the learner to count its connections", || {
        (scrape(m, "qd_learner_connections", &[]) == Some(2.0)).then_some(())
    });
    // A third takes the silent one's slot: served, and the silent one is closed.
    let mut third = client(&rt, addr);
    status(&rt, &mut third, None);
    assert_eq!(refusals(m, "evicted_silent"), 1.0);
    // (It reads the learner's HTTP/2 settings, then the end of the connection.)
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    match std::io::Read::read_to_end(&mut raw, &mut buf) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the silent connection is still open"
        ),
    }
    // With both slots held by connections that speak, a fourth is closed at once: its
    // call fails, the open ones go on.
    let fourth = client_result(&rt, addr)
        .map_err(|e| e.to_string())
        .and_then(|mut c4| {
            rt.block_on(c4.status(StatusRequest {}))
                .map_err(|e| e.to_string())
        });
    assert!(fourth.is_err(), "a connection beyond the limit was served");
    assert!(refusals(m, "connection_limit") >= 1.0);
    status(&rt, &mut c, None);
    // Closing one frees its slot.
    drop(third);
    wait_until("a connection slot to be released", || {
        let mut c4 = client_result(&rt, addr).ok()?;
        rt.block_on(c4.status(StatusRequest {})).ok()
    });
}

#[test]
fn silent_sockets_cannot_lock_a_new_actor_out() {
    let f = Fixture::new();
    // The default limits (512 connections, 256 per address), a short handshake deadline.
    let cfg = f.config("silent", "[limits]\nhandshake_timeout_s = 3\n");
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let m = metrics_addr(&f);
    let rt = runtime();
    // 600 TCP connections from this address that never send a byte.
    let silent: Vec<std::net::TcpStream> = (0..600)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    wait_until("the learner to hold its share of them", || {
        (scrape(m, "qd_learner_connections", &[]) == Some(256.0)).then_some(())
    });
    // A new client from the same address registers at once: a silent one makes room.
    let t0 = Instant::now();
    let mut c = client(&rt, addr);
    register(&rt, &mut c, None);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(refusals(m, "evicted_silent") >= 1.0);
    // The rest are closed at the handshake deadline: the learner holds only the client.
    wait_until("the silent connections to be closed", || {
        (scrape(m, "qd_learner_connections", &[]) == Some(1.0)).then_some(())
    });
    assert!(refusals(m, "handshake_timeout") >= 200.0);
    drop(silent);
    status(&rt, &mut c, None);
}

/// A message on the `PushTrajectories` wire that does not decode as a TrajectoryBatch:
/// field 3 (`trajectories`, a message) sent as a number.
#[derive(Clone, PartialEq, prost::Message)]
struct NotABatch {
    #[prost(uint64, tag = "3")]
    trajectories: u64,
}

/// Sends `msgs` on a `PushTrajectories` stream as they are encoded; the first answer.
fn push_encoded<M: prost::Message + Send + Sync + Clone + 'static>(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    id: u64,
    msgs: Vec<M>,
) -> Result<Option<PushAck>, Status> {
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/qd.v1.Learner/PushTrajectories");
        let codec = tonic_prost::ProstCodec::<M, PushAck>::default();
        let req = as_client(tokio_stream::iter(msgs), None, id);
        grpc.streaming(req, path, codec)
            .await?
            .into_inner()
            .message()
            .await
    })
}

#[test]
fn unreadable_messages_get_a_status() {
    let f = Fixture::new();
    // Small messages, so that an oversize one is cheap to send.
    let cfg = f.config(
        "small",
        "[learner]\nchunk_bytes = 65536\nmax_message_bytes = 262144\n",
    );
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let m = metrics_addr(&f);
    let rt = runtime();
    let mut c = client(&rt, addr);
    let id = register(&rt, &mut c, None);

    let e = push_encoded(&rt, addr, id, vec![NotABatch { trajectories: 7 }]).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("unreadable TrajectoryBatch"), "{e:?}");

    let big = TrajectoryBatch {
        version: 1,
        sequence: 0,
        trajectories: vec![Trajectory {
            prompt: vec![4],
            reward: 0.5,
            samples: vec![
                Sample {
                    tokens: vec![10; 100_000],
                    logprobs: vec![-1.0; 100_000],
                };
                2
            ],
        }],
    };
    let e = push_encoded(&rt, addr, id, vec![big]).unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    // Within the length limit, a batch of empty trajectories would decode to ~50 times
    // its size: refused before it is decoded, saying so.
    let s0 = status(&rt, &mut c, None);
    let limit = rt
        .block_on(c.register(RegisterRequest {
            protocol_version: qd_proto::PROTOCOL_VERSION,
            model_config_hash: s0.model_config_hash,
            vocab_hash: s0.vocab_hash,
            role: Role::Actor as i32,
            ..RegisterRequest::default()
        }))
        .unwrap()
        .into_inner()
        .max_message_bytes as usize;
    // What the batch shape needs (a tiny model's here), at least a Register's 20 KiB:
    // kilobytes, where the weights going the other way may take 64 MiB.
    assert!((20 << 10..1 << 20).contains(&limit), "{limit}");
    let hollow = TrajectoryBatch {
        version: 1,
        sequence: 1,
        trajectories: vec![Trajectory::default(); (limit - 64) / 2],
    };
    let e = push_encoded(&rt, addr, id, vec![hollow]).unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("bytes to decode"), "{e:?}");
    for (reason, n) in [("malformed", 1.0), ("oversize", 2.0)] {
        let v = scrape(
            m,
            "qd_learner_trajectories_dropped_total",
            &[("reason", reason)],
        );
        assert_eq!(v, Some(n), "{reason}");
    }

    // Register's strings are bounded; a refusal never echoes one unbounded.
    let s = status(&rt, &mut c, None);
    let good = RegisterRequest {
        protocol_version: qd_proto::PROTOCOL_VERSION,
        model_config_hash: s.model_config_hash.clone(),
        model_config_json: String::new(),
        vocab_hash: s.vocab_hash.clone(),
        role: Role::Actor as i32,
        name: "a client".into(),
    };
    let long = "x".repeat(100_000);
    // A Register longer than any honest one is refused at its length.
    let e = rt
        .block_on(c.register(RegisterRequest {
            name: long.clone(),
            ..good.clone()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    // (tonic's length limit or, where the batch shape allows more, the codec's.)
    assert!(
        e.message().contains("too large") || e.message().contains("RegisterRequest"),
        "{e:?}"
    );
    for (field, req) in [
        (
            "name",
            RegisterRequest {
                name: long[..1_000].to_string(),
                ..good.clone()
            },
        ),
        (
            "vocab_hash",
            RegisterRequest {
                vocab_hash: long[..10_000].to_string(),
                ..good.clone()
            },
        ),
    ] {
        let e = rt.block_on(c.register(req)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(
            e.message().contains(field) && e.message().len() < 200,
            "{field}: {e:?}"
        );
    }
    // A wrong hash of acceptable length is echoed cut short.
    let e = rt
        .block_on(c.register(RegisterRequest {
            vocab_hash: long[..100].to_string(),
            ..good.clone()
        }))
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("(100 bytes)") && !e.message().contains(&long[..100]),
        "{e:?}"
    );
    // The learner is still up and serves an honest client.
    assert!(rt.block_on(c.register(good)).is_ok());
    let log = learner.log();
    assert!(
        log.lines().all(|l| l.len() < 2_000),
        "a client's string reached the log whole"
    );
}

#[test]
fn a_learner_on_a_reachable_port_needs_a_token() {
    let f = Fixture::new();
    let exposed = f.config("exposed", "[learner]\nlisten = \"0.0.0.0:0\"\n");
    let mut refused = f.spawn("exposed", "learner", &exposed, &[]);
    assert!(!refused.wait().success());
    assert!(
        refused
            .log()
            .contains("refusing to serve 0.0.0.0:0 without a token"),
        "{}",
        refused.log()
    );
    // Told explicitly, it serves, and says so.
    let mut insecure = f.spawn(
        "insecure",
        "learner",
        &exposed,
        &["auth.insecure=true".into()],
    );
    f.learner_addr(&mut insecure);
    assert!(
        insecure.log().contains("auth.insecure"),
        "{}",
        insecure.log()
    );
    drop(insecure);

    // Short and example tokens are refused by every role; a token is never printed.
    for token in ["tiny-tok", "replace-me-with-a-random-token"] {
        let o = Command::new(env!("CARGO_BIN_EXE_qd"))
            .args(["config", "--config"])
            .arg(&exposed)
            .args(["--set", &format!("auth.token={token}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("auth.token"), "{err}");
        assert!(!err.contains(token), "the token was printed: {err}");
    }
    let token = "a-good-token-of-32-bytes-0123456";
    let o = Command::new(env!("CARGO_BIN_EXE_qd"))
        .args(["config", "--config"])
        .arg(&exposed)
        .args(["--set", &format!("auth.token={token}")])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("<redacted: 32 bytes>") && !out.contains(token),
        "{out}"
    );
}
