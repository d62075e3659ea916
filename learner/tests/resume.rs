//! A learner that stops and resumes is the learner that never stopped: fed the same
//! batches, a run interrupted after its checkpoint at step 3 and resumed from it ends
//! with the same weights and AdamW moments, bit for bit, and logs the same losses, EMA
//! baseline included, as an uninterrupted run. A damaged newest checkpoint is skipped:
//! the learner resumes from the one before, trims the log to it and publishes a version
//! above every earlier one.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tch::{Device, Tensor};
use tokio::sync::watch;

use common::settings::{Baseline, LearnerSettings};
use learner::broadcast::Publisher;
use learner::queue::{sample_pairs, Pair, Queue};
use learner::trainer::{checkpoints, Outcome, Stopped, Trainer};
use model::checkpoint::load_policy;
use model::sampling::SamplingConfig;
use model::task::Task;
use testkit::synthetic::{base_policy, SyntheticTask, FIRST_WORD, PROMPTS};

const BATCH: usize = 2;
const STEPS: u64 = 6;

fn settings() -> LearnerSettings {
    LearnerSettings {
        batch_prompts: BATCH,
        beta: 1.0,
        // The EMA baseline carries state from step to step: the checkpoint must keep it.
        baseline: Baseline::Ema,
        max_steps: STEPS,
        warmup_steps: 2,
        checkpoint_every: 3,
        keep_checkpoints: 4,
        // The batches were sampled at version 0: none is too stale to train on.
        max_staleness: 1_000,
        ..LearnerSettings::default()
    }
}

/// `STEPS` batches of pairs sampled from the base model, rewards varied.
fn batches(base: &Path, task: &dyn Task) -> Vec<Vec<Pair>> {
    let (_vs, m, _) = load_policy(base, task, Device::Cpu).unwrap();
    let n = STEPS as usize * BATCH;
    let prompts: Vec<Vec<u32>> = (0..n)
        .map(|i| vec![FIRST_WORD + (i as u32 % PROMPTS)])
        .collect();
    let cfg = SamplingConfig {
        max_new_tokens: 6,
        ..SamplingConfig::default()
    };
    let reward = |i: usize| 0.1 + 0.07 * (i % 5) as f32;
    let pairs = sample_pairs(&m, prompts, task.vocabulary(), &cfg, 0, 0, reward).unwrap();
    pairs.chunks(BATCH).map(<[Pair]>::to_vec).collect()
}

/// A trainer on `run_dir` fed `batches`, run until the budget or until the batches run
/// out (as a learner whose actors are gone, told to stop).
fn train(run_dir: &Path, base: &Path, task: &dyn Task, batches: &[Vec<Pair>]) -> Outcome {
    run(trainer(run_dir, base, task).unwrap(), batches).unwrap()
}

fn trainer(run_dir: &Path, base: &Path, task: &dyn Task) -> anyhow::Result<Trainer> {
    Trainer::new(
        settings(),
        base,
        run_dir,
        task,
        Arc::new(Publisher::default()),
        Device::Cpu,
    )
}

fn run(trainer: Trainer, batches: &[Vec<Pair>]) -> anyhow::Result<Outcome> {
    let cfg = settings();
    let (queue, rx) = Queue::new(1024, cfg.max_staleness);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for batch in batches {
        let pushed = rt.block_on(queue.push(batch.clone(), 0, 0, 1)).unwrap();
        assert_eq!(pushed, batch.len());
    }
    // Once the queue is empty and closed the trainer stops, as on a signal.
    drop(queue);
    let (_stop_tx, stop_rx) = watch::channel(false);
    trainer.run(rx, stop_rx, rt.handle().clone())
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

/// Each step's logged losses, without what depends on time or versions.
fn logged(run_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run_dir.join("train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            for key in [
                "unix_time",
                "step_seconds",
                "samples_per_second",
                "version",
                "mean_staleness",
            ] {
                assert!(o.remove(key).is_some(), "no {key} in {l}");
            }
            v
        })
        .collect()
}

fn assert_same_tensors(a: &Path, b: &Path) {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs");
    }
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let task = SyntheticTask::default();
    let base = dir.path().join("base.safetensors");
    base_policy(&base, &task).unwrap();
    let batches = batches(&base, &task);

    let whole = dir.path().join("whole");
    let o = train(&whole, &base, &task, &batches);
    assert_eq!((o.stopped, o.step), (Stopped::Budget, STEPS));

    // Half the batches, then the queue runs dry: the learner stops at step 3 (its
    // checkpoint), and a new one resumes there with the other half.
    let split = dir.path().join("split");
    let half = STEPS as usize / 2;
    let first = train(&split, &base, &task, &batches[..half]);
    assert_eq!((first.stopped, first.step), (Stopped::Signal, 3));
    let second = train(&split, &base, &task, &batches[half..]);
    assert_eq!((second.stopped, second.step), (Stopped::Budget, STEPS));
    assert!(second.version > first.version);

    // Weights and moments, bit for bit.
    assert_same_tensors(
        &whole.join("student.safetensors"),
        &split.join("student.safetensors"),
    );
    let newest = |d: &Path| checkpoints(d).into_iter().next().unwrap();
    assert!(newest(&split).ends_with("step-00000006.safetensors"));
    assert_same_tensors(&newest(&whole), &newest(&split));
    // Every step logged once, with the same losses, baseline and gradient norms.
    let (a, b) = (logged(&whole), logged(&split));
    assert_eq!(a.len(), STEPS as usize);
    assert_eq!(a, b);
    // The EMA baseline moved (so the checkpoint had state to keep).
    let baselines: Vec<f64> = a.iter().map(|l| l["baseline"].as_f64().unwrap()).collect();
    assert!(baselines.windows(2).any(|w| w[0] != w[1]), "{baselines:?}");
}

#[test]
fn a_damaged_checkpoint_is_skipped_for_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let task = SyntheticTask::default();
    let base = dir.path().join("base.safetensors");
    base_policy(&base, &task).unwrap();
    let batches = batches(&base, &task);
    let run = dir.path().join("run");
    let done = train(&run, &base, &task, &batches);
    assert_eq!(done.step, STEPS);
    let saved = checkpoints(&run);
    assert!(saved[0].ends_with("step-00000006.safetensors"), "{saved:?}");
    let at_three = tensors(&saved[1]);

    // The newest checkpoint loses its second half (a crash mid-copy, a full disk).
    let bytes = std::fs::read(&saved[0]).unwrap();
    std::fs::write(&saved[0], &bytes[..bytes.len() / 2]).unwrap();
    let resumed = train(&run, &base, &task, &[]);
    // It resumed from step 3, took no step (no batches) and saved the weights it had.
    assert_eq!((resumed.stopped, resumed.step), (Stopped::Signal, 3));
    let student = tensors(&run.join("student.safetensors"));
    for (name, t) in &student {
        assert!(t.equal(&at_three[name]), "{name} is not step 3's");
    }
    // The log holds the steps up to the checkpoint only; the version is above every
    // version the run published before.
    let steps: Vec<u64> = logged(&run)
        .iter()
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3]);
    assert!(
        resumed.version > done.version,
        "{} vs {}",
        resumed.version,
        done.version
    );
}

#[test]
fn a_checkpoint_that_cannot_be_written_does_not_stop_training() {
    let dir = tempfile::tempdir().unwrap();
    let task = SyntheticTask::default();
    let base = dir.path().join("base.safetensors");
    base_policy(&base, &task).unwrap();
    let batches = batches(&base, &task);
    let run_dir = dir.path().join("run");
    let t = trainer(&run_dir, &base, &task).unwrap();
    // The checkpoint folder becomes a file: every checkpoint write fails (as on a full
    // disk), whoever runs the test.
    let folder = run_dir.join("checkpoints");
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();
    let e = run(t, &batches).unwrap_err();
    // The checkpoint at step 3 failed and training went on to the budget; the last one,
    // at the end, failing too, is the run's error: it names what could not be written.
    assert_eq!(logged(&run_dir).len(), STEPS as usize);
    assert!(format!("{e:#}").contains("step-00000006"), "{e:#}");
}

#[test]
fn an_unreadable_published_version_stops_the_learner_before_it_reuses_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let task = SyntheticTask::default();
    let base = dir.path().join("base.safetensors");
    base_policy(&base, &task).unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("published-version"), "12\n7").unwrap();
    let e = trainer(&run_dir, &base, &task).err().unwrap();
    assert!(format!("{e:#}").contains("not a version number"), "{e:#}");
    std::fs::write(run_dir.join("published-version"), "41\n").unwrap();
    let t = trainer(&run_dir, &base, &task).unwrap();
    let o = run(t, &[]).unwrap();
    assert!(o.version > 41, "{}", o.version);
}
