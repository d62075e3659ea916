//! `qd pretrain`, `qd embedder train` and `qd judge train`.

use anyhow::Result;
use folk::embedder::{train_embedder, EmbedderConfig};
use folk::judge::{train_judge, JudgeConfig};
use folk::pretrain::PretrainConfig;

use super::create_parent;
use crate::cli::{EncoderTrainArgs, PretrainArgs};

pub fn pretrain(a: PretrainArgs) -> Result<()> {
    let device = a.compute.apply()?;
    anyhow::ensure!(
        (0.0..1.0).contains(&a.cond_dropout),
        "--cond-dropout must be in [0, 1)"
    );
    anyhow::ensure!(a.lr > 0.0 && a.lr.is_finite(), "--lr must be positive");
    let cfg = PretrainConfig {
        data: a.data,
        out: a.out,
        preset: a.preset,
        metrical: !a.no_metrical,
        remi: a.remi,
        steps: a.steps,
        until: a.until,
        batch_size: a.batch_size as usize,
        context: a.context as usize,
        lr: a.lr,
        warmup: a.warmup.max(1),
        clip: a.clip,
        cond_dropout: a.cond_dropout,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
        seed: a.seed,
        device,
        progress: !a.no_progress,
    };
    let r = folk::pretrain::pretrain(&cfg)?;
    println!(
        "pre-trained {} steps in {:.0}s, validation loss {:.3}: {}",
        r.steps,
        r.seconds,
        r.val_loss,
        r.checkpoint.display()
    );
    Ok(())
}

pub fn embedder(a: EncoderTrainArgs) -> Result<()> {
    let device = a.compute.apply()?;
    let out = a.out("runs/embedder.safetensors");
    create_parent(&out)?;
    let cfg = EmbedderConfig {
        data: a.data,
        out,
        steps: a.steps,
        batch_size: a.batch_size as usize,
        lr: a.lr,
        dim: 64,
        crop_min: 16,
        crop_max: 64,
        tau: 0.1,
        seed: a.seed,
        device,
        progress: !a.no_progress,
    };
    let r = train_embedder(&cfg)?;
    println!(
        "embedder trained in {:.0}s: validation retrieval accuracy {:.3} (batches of {}, chance {:.3}): {}",
        r.seconds,
        r.val_retrieval,
        cfg.batch_size,
        1.0 / cfg.batch_size as f64,
        r.checkpoint.display()
    );
    Ok(())
}

pub fn judge(a: EncoderTrainArgs) -> Result<()> {
    let device = a.compute.apply()?;
    let out = a.out("runs/judge.safetensors");
    create_parent(&out)?;
    let cfg = JudgeConfig {
        data: a.data,
        out,
        steps: a.steps,
        batch_size: a.batch_size as usize,
        lr: a.lr,
        seed: a.seed,
        device,
        progress: !a.no_progress,
    };
    let r = train_judge(&cfg)?;
    println!(
        "judge trained in {:.0}s: {}",
        r.seconds,
        r.checkpoint.display()
    );
    for (name, acc) in &r.val_accuracy {
        println!("  validation accuracy {name:<7} {acc:.3}");
    }
    Ok(())
}
