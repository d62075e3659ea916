//! Training through the service, and its faults: actors dying and joining, the learner
//! killed and resumed.

use super::*;

#[test]
fn learner_and_two_actors_train_publish_and_distil() {
    let f = Fixture::new();
    let cfg = f.config("run", "");
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let actors = f.actors(2, &cfg, addr);
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
            scrape(m, "qd_actor_weight_version", &[]).filter(|&w| w >= v)
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
    // Nothing goes stale here, so that every accepted trajectory is accounted for by the
    // steps (stale ones are refused at intake, before they count as accepted).
    let cfg = f.config("run", "[learner]\nmax_staleness = 1000000\n");
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let url = format!("client.learner=http://{addr}");
    let a1 = f.spawn(
        "actor-1",
        "actor",
        &cfg,
        &[url.clone(), "actor.seed=1".into()],
    );
    let a2 = f.spawn(
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
    let a3 = f.spawn("actor-3", "actor", &cfg, &[url, "actor.seed=3".into()]);
    let v = status(&rt, &mut c, None).version as f64;
    let m = f.metrics_addr("actor-3");
    wait_until("the new actor to catch up", || {
        scrape(m, "qd_actor_weight_version", &[]).filter(|&w| w >= v)
    });
    wait_until("two actors connected", || {
        (status(&rt, &mut c, None).actors_connected == 2).then_some(())
    });
    assert!(
        learner.child.try_wait().unwrap().is_none(),
        "{}",
        learner.log()
    );

    // Every trajectory accepted is accounted for, exactly: with the actors gone and the
    // learner idle, it still waits (in the queue or in a batch not yet full), or the
    // trainer took it, and what it took is what the steps trained on.
    for a in [a2, a3] {
        a.signal(nix::sys::signal::Signal::SIGKILL);
    }
    let (s, trained) = wait_until("the learner to go idle (taken == trained)", || {
        let s = status(&rt, &mut c, None);
        let log = train_log(&f.path("rl/train.jsonl"));
        let trained: u64 = log.iter().map(|l| l["pairs"].as_u64().unwrap()).sum();
        (s.actors_connected == 0 && log.len() as u64 == s.step && trained == s.trajectories_taken)
            .then_some((s, trained))
    });
    assert!(trained > 0);
    assert_eq!(
        s.trajectories_accepted,
        u64::from(s.queue_depth) + s.trajectories_expired + s.trajectories_taken,
        "{s:?}"
    );
    // batch_prompts = 4: fewer than 4 wait in a batch not yet full.
    assert!(s.queue_depth < 4, "{s:?}");
    assert_eq!(s.trajectories_stale, 0, "{s:?}");
    assert_eq!(s.trajectories_rejected, 0, "{s:?}");
    for line in learner.log().lines() {
        assert!(
            !line.contains("ERROR") && !line.contains("WARN"),
            "the learner warned: {line}"
        );
    }
}

/// The `key=value` fields of the first line of `log` that contains `what`.
fn logged_counts(log: &str, what: &str) -> std::collections::HashMap<String, u64> {
    let line = log
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no line with {what:?}:\n{log}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

#[test]
fn every_trajectory_an_actor_sends_is_accounted_for_to_the_finish() {
    let f = Fixture::new();
    let cfg = f.config("run", "[learner]\nmax_steps = 8\n");
    let mut learner = f.spawn("learner", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let mut actors = f.actors(2, &cfg, addr);
    assert!(learner.wait().success(), "{}", learner.log());
    let mut acknowledged = 0;
    for a in &mut actors {
        assert!(a.wait().success(), "{}", a.log());
        let c = logged_counts(&a.log(), "trajectories: sent");
        assert!(c["sent"] > 0, "{c:?}");
        assert_eq!(
            c["sent"],
            c["acknowledged"] + c["declined"] + c["unacknowledged"],
            "{c:?}"
        );
        acknowledged += c["acknowledged"];
    }
    // What the actors were told was queued is what the learner accepted; each accepted
    // pair was trained on once, expired, or was waiting when the run ended.
    let l = logged_counts(&learner.log(), "trajectories: accepted");
    assert_eq!(l["accepted"], acknowledged, "{l:?}");
    assert_eq!(
        l["accepted"],
        l["taken"] + l["expired"] + l["waiting"],
        "{l:?}"
    );
    let log = train_log(&f.path("rl/train.jsonl"));
    assert_eq!(log.len(), 8);
    let trained: u64 = log.iter().map(|line| line["pairs"].as_u64().unwrap()).sum();
    assert_eq!(l["taken"], trained, "{l:?}");
}

/// The first version a learner streams to a new subscriber, reassembled.
fn first_published(rt: &tokio::runtime::Runtime, c: &mut Client) -> Checkpoint {
    let id = register(rt, c, None);
    let mut stream = rt
        .block_on(c.watch_weights(as_client(
            qd_proto::WatchRequest { have_version: 0 },
            None,
            id,
        )))
        .unwrap()
        .into_inner();
    let mut assembler = actor::broadcast::Assembler::default();
    loop {
        let chunk = rt.block_on(stream.message()).unwrap().unwrap();
        if let Some(w) = assembler.push(chunk, 1 << 30).unwrap() {
            let ck = w.checkpoint().unwrap();
            assert_eq!((ck.meta.version, ck.meta.step), (w.version, w.step));
            return ck;
        }
    }
}

/// Every model tensor and optimizer moment of `a` equals `b`'s, bit for bit.
fn assert_same_state(a: &Checkpoint, b: &Checkpoint, what: &str) {
    let names = |c: &Checkpoint| c.tensors().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b), "{what}: tensor names");
    for ((n, x), (_, y)) in a.tensors().zip(b.tensors()) {
        assert!(x.equal(y), "{what}: tensor {n} differs");
    }
    match (a.optimizer_state(), b.optimizer_state()) {
        (Some((sa, ma)), Some((sb, mb))) => {
            assert_eq!(sa, sb, "{what}: optimizer step");
            assert_eq!(ma.len(), mb.len(), "{what}: optimizer moments");
            for ((n, x), (m, y)) in ma.iter().zip(&mb) {
                assert!(n == m && x.equal(y), "{what}: optimizer moment {n} differs");
            }
        }
        (None, None) => {}
        _ => panic!("{what}: one has optimizer state, the other not"),
    }
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
    // The actor holds still while the learner is killed and checked, so that only the
    // restarted learner's own state is observed.
    actor.signal(nix::sys::signal::Signal::SIGSTOP);
    let seen = status(&rt, &mut c, None).version;
    learner.signal(nix::sys::signal::Signal::SIGKILL);
    learner.wait();
    let newest = learner::trainer::checkpoints(&f.path("rl"))
        .into_iter()
        .next()
        .unwrap();
    let saved = Checkpoint::read(&newest).unwrap();
    let meta = saved.meta.clone();
    assert!(meta.step >= 6 && meta.step % 3 == 0, "{meta:?}");
    assert_eq!(meta.optimizer_step, Some(meta.step as i64));

    // Restarted, the learner publishes the checkpoint's weights, bit for bit, under a
    // version above every one it published before (those held other weights); stopped
    // at once, it checkpoints the same weights and moments.
    std::fs::remove_file(f.path("rl/endpoints.json")).unwrap();
    let mut learner = f.spawn("learner-2", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    let mut c = client(&rt, addr);
    let published = first_published(&rt, &mut c);
    assert_eq!(published.meta.step, meta.step);
    assert!(
        published.meta.version > seen.max(meta.version),
        "{:?} after {meta:?}, version {seen} seen before the kill",
        published.meta
    );
    assert_same_state(
        &Checkpoint::from_tensors(
            published.meta.clone(),
            saved
                .tensors()
                .map(|(n, t)| (n.to_string(), t.shallow_clone()))
                .collect(),
        ),
        &published,
        "published after the restart vs the checkpoint",
    );
    let s = status(&rt, &mut c, None);
    assert_eq!((s.step, s.trajectories_rejected), (meta.step, 0), "{s:?}");
    learner.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(learner.wait().success(), "{}", learner.log());
    let rewritten = Checkpoint::read(&learner::trainer::checkpoints(&f.path("rl"))[0]).unwrap();
    assert_eq!(rewritten.meta.step, meta.step);
    assert_same_state(
        &saved,
        &rewritten,
        "checkpoint after a restart without steps",
    );

    // Started again, it trains on from there with the actor, which was never restarted.
    std::fs::remove_file(f.path("rl/endpoints.json")).unwrap();
    let mut learner = f.spawn("learner-3", "learner", &cfg, &[]);
    let addr = f.learner_addr(&mut learner);
    actor.signal(nix::sys::signal::Signal::SIGCONT);
    let mut c = client(&rt, addr);
    let start = Instant::now();
    let s = loop {
        let s = status(&rt, &mut c, None);
        if s.step >= meta.step + 4 {
            break s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no training after the restart: {s:?}\n--- learner\n{}\n--- actor\n{}",
            learner.log(),
            actor.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(s.actors_connected >= 1);
    assert_eq!(
        s.trajectories_rejected, 0,
        "nothing refused after the restart: {s:?}"
    );
    learner.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(learner.wait().success(), "{}", learner.log());
    assert!(
        learner.log().contains("resumed from checkpoint"),
        "{}",
        learner.log()
    );
    let last = Checkpoint::read(&learner::trainer::checkpoints(&f.path("rl"))[0])
        .unwrap()
        .meta;
    assert!(last.step >= meta.step + 4);
    assert_eq!(
        last.optimizer_step,
        Some(last.step as i64),
        "the optimizer's step continued"
    );
    // Each step once in the training log, in order.
    let steps: Vec<u64> = train_log(&f.path("rl/train.jsonl"))
        .iter()
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=last.step).collect::<Vec<_>>());
    assert!(
        actor.log().contains("connection to the learner lost"),
        "{}",
        actor.log()
    );
    assert!(!actor.log().contains("panicked"), "{}", actor.log());
}
