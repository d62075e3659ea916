//! `qd pretrain` on the fixture corpus with the tiny preset: the loss falls, and a run
//! stopped and resumed ends where an uninterrupted one does.

#![allow(clippy::unwrap_used)]

use folk::pretrain::{pretrain, PretrainConfig};
use model::checkpoint::Checkpoint;
use model::config::Preset;
use tch::Device;

fn config(data: &std::path::Path, out: &std::path::Path, until: u64) -> PretrainConfig {
    PretrainConfig {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        preset: Preset::Tiny,
        metrical: true,
        remi: false,
        steps: 30,
        until: Some(until),
        batch_size: 8,
        context: 128,
        lr: 5e-3,
        warmup: 5,
        clip: 1.0,
        cond_dropout: 0.15,
        eval_every: 10,
        checkpoint_every: 10,
        seed: 1,
        device: Device::Cpu,
        progress: false,
    }
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = testkit::fixture_dataset(dir.path());
    let straight = pretrain(&config(&data, &dir.path().join("a"), 30)).unwrap();
    // The same run stopped after step 20, then resumed from its checkpoint.
    pretrain(&config(&data, &dir.path().join("b"), 20)).unwrap();
    let resumed = pretrain(&config(&data, &dir.path().join("b"), 30)).unwrap();
    assert_eq!((straight.steps, resumed.steps), (30, 30));
    let a = Checkpoint::read(&straight.checkpoint).unwrap();
    let b = Checkpoint::read(&resumed.checkpoint).unwrap();
    assert_eq!(b.meta.optimizer_step, Some(30));
    for ((na, ta), (nb, tb)) in a.tensors().zip(b.tensors()) {
        assert_eq!(na, nb);
        let d = (ta - tb).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{na} differs by {d}");
    }
    // The loss falls.
    let early = pretrain(&config(&data, &dir.path().join("c"), 3))
        .unwrap()
        .train_loss;
    assert!(
        straight.train_loss < 0.7 * early,
        "train loss {early} → {}",
        straight.train_loss
    );
}
