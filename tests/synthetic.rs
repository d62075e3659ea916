//! The method apart from the task: a learner and an actor, unchanged, train on the
//! synthetic task of `testkit::synthetic` and exchange real trajectories and weights
//! over gRPC on loopback; an evaluation and a sample go through the same boundary.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::settings::Settings;
use common::telemetry::Endpoints;
use eval::evaluate::{evaluate, EvalConfig};
use model::checkpoint::{load_policy, Checkpoint};
use model::sampling::SamplingConfig;
use model::task::Task;
use testkit::synthetic::SyntheticTask;

/// Polls for the learner's endpoints file (written once it listens).
async fn wait_for_endpoints(path: &Path) -> Endpoints {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(e) = Endpoints::read(path) {
            return e;
        }
        assert!(Instant::now() < deadline, "the learner did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_and_actor_train_a_second_task_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let task: Arc<dyn Task> = Arc::new(SyntheticTask::default());
    let base = dir.path().join("base.safetensors");
    testkit::synthetic::base_policy(&base, task.as_ref()).unwrap();

    let mut settings = Settings::default();
    settings.paths.base = base.clone();
    settings.paths.run_dir = dir.path().join("run");
    settings.learner.listen = "127.0.0.1:0".into();
    settings.learner.metrics_listen = String::new();
    settings.learner.batch_prompts = 2;
    settings.learner.beta = 1.0;
    settings.learner.max_steps = 4;
    settings.learner.warmup_steps = 1;
    settings.learner.checkpoint_every = 2;
    settings.learner.threads = 1;
    settings.actor.batch_prompts = 2;
    settings.actor.max_new_tokens = 6;
    settings.actor.metrics_listen = String::new();
    settings.actor.threads = 1;
    settings.actor.name = "synthetic-actor".into();

    let ready = dir.path().join("learner.json");
    let learner = {
        let (settings, task, ready) = (settings.clone(), task.clone(), ready.clone());
        tokio::spawn(async move { learner::run(settings, task, Some(&ready)).await })
    };
    let endpoints = wait_for_endpoints(&ready).await;
    settings.client.learner = format!("http://{}", endpoints.grpc.unwrap());
    let actor = {
        let (settings, task) = (settings.clone(), task.clone());
        tokio::spawn(async move { actor::rollout::run(settings, task, None).await })
    };

    let outcome = tokio::time::timeout(Duration::from_secs(300), learner)
        .await
        .expect("the learner did not reach max_steps")
        .unwrap()
        .unwrap();
    actor.abort();
    assert_eq!(outcome.step, 4);
    assert!(outcome.version >= 4, "{outcome:?}");

    // Every step trained on the synthetic task's trajectories, once.
    let log = std::fs::read_to_string(settings.paths.run_dir.join("train.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        steps
            .iter()
            .map(|s| s["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for s in &steps {
        assert_eq!(s["pairs"].as_u64(), Some(2), "{s}");
        let reward = s["reward_mean"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&reward),
            "histogram rewards lie in [0, 1]: {s}"
        );
        assert!(
            s["loss"].as_f64().unwrap().is_finite() && s["kl"].as_f64().unwrap() >= 0.0,
            "{s}"
        );
    }

    // The student moved away from the base model, and is stamped for the synthetic task.
    let student = Checkpoint::read(&outcome.student).unwrap();
    assert_eq!(student.meta.vocab_hash, task.vocab_hash());
    assert_eq!(student.meta.step, 4);
    let base_ck = Checkpoint::read(&base).unwrap();
    let moved = student
        .tensors()
        .zip(base_ck.tensors())
        .any(|((n, a), (m, b))| n == m && !a.equal(b));
    assert!(moved, "the student's weights equal the base model's");

    // Evaluation and samples go through the same boundary.
    let (_vs, policy, _ck) =
        load_policy(&outcome.student, task.as_ref(), tch::Device::Cpu).unwrap();
    let embedder = task.embedder(tch::Device::Cpu).unwrap();
    let judge = task.judge(tch::Device::Cpu).unwrap();
    let cfg = EvalConfig {
        split: model::task::Split::Test,
        k: 2,
        prompts: None,
        batch: 8,
        sampling: SamplingConfig {
            max_new_tokens: 6,
            ..SamplingConfig::default()
        },
        seed: 0,
        progress: false,
    };
    let r = evaluate(
        &policy,
        task.as_ref(),
        embedder.as_ref(),
        judge.as_ref(),
        &cfg,
    )
    .unwrap();
    assert_eq!((r.prompts, r.samples), (4, 8));
    // The reference outputs repeat their prompt's symbol: adherence 1, valid.
    assert_eq!(r.quality_of_real_tunes, 1.0);
    assert!(
        (0.0..=1.0).contains(&r.quality) && (0.0..=1.0).contains(&r.embed_diversity),
        "{r:?}"
    );
    let written = task
        .write_sample("<a>", 1, &[7, 8, 2], &dir.path().join("sample"))
        .unwrap();
    assert_eq!(written.text, "1. <a>: s0 s1 <eos>\n");
    assert!(written.files[0].exists());
}
