//! `qd bench generate`, `learner`, `pretrain`, `scaling`, `service` and `faults`.

use std::path::PathBuf;

use anyhow::Result;
use folk::dataset::Dataset;
use folk::FolkTask;
use model::checkpoint::{load_policy, save, ModelKind, Stamp};
use model::task::Task;
use qd_bench::generate::{bench_generate, BenchConfig};

use crate::cli::{
    BenchFaultsArgs, BenchGenerateArgs, BenchLearnerArgs, BenchPretrainArgs, BenchScalingArgs,
    BenchServiceArgs,
};
use folk::metrical::Metrical;
use model::structure::Structure;
use qd_bench::faults::{bench_faults, FaultsConfig};
use qd_bench::learner::{bench_step, StepBenchConfig};
use qd_bench::pretrain::{bench_pretrain, PretrainBenchConfig};
use qd_bench::scaling::{bench_scaling, ScalingConfig};
use qd_bench::service::bench_service;

pub fn generate(a: BenchGenerateArgs) -> Result<()> {
    let device = a.compute.apply()?;
    let task = FolkTask::new(Dataset::load(&a.data)?, PathBuf::new(), PathBuf::new());
    let tmp = tempfile::tempdir()?;
    let (_vs, model, checkpoint) = match &a.checkpoint {
        Some(path) => {
            let (vs, model, _ck) = load_policy(path, &task, device)?;
            (vs, model, path.clone())
        }
        None => {
            tch::manual_seed(0);
            let mut config = a.preset.config(task.vocab_size());
            config.structure = Some(Metrical::new(&task.dataset().vocab).spec());
            let vs = tch::nn::VarStore::new(device);
            let model = model::transformer::Transformer::new(&vs.root(), &config);
            let path = tmp.path().join("init.safetensors");
            let stamp = Stamp {
                kind: ModelKind::Policy,
                config: &config,
                vocab_hash: &task.vocab_hash(),
                step: 0,
                version: 0,
                extra: serde_json::Value::Null,
            };
            save(&path, &vs, None, stamp)?;
            (vs, model, path)
        }
    };
    let cfg = BenchConfig {
        batch: a.batch as usize,
        new_tokens: a.new_tokens as usize,
        reps: a.reps as usize,
        cfg_gamma: a.cfg_gamma,
        python: a.reference.python(),
        script: PathBuf::from("scripts/reference_generate.py"),
        structure: Some(folk::metrical::python_port(&task.dataset().vocab)),
    };
    let r = bench_generate(&model, &checkpoint, &task, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", r.table());
    }
    Ok(())
}

pub fn service(a: BenchServiceArgs) -> Result<()> {
    anyhow::ensure!(
        !a.actors.is_empty() && a.actors.iter().all(|&k| (1..=64).contains(&k)),
        "--actors takes counts from 1 to 64"
    );
    anyhow::ensure!(
        a.subscribers.iter().all(|&k| (1..=64).contains(&k)),
        "--subscribers takes counts from 1 to 64"
    );
    let r = bench_service(
        a.service.config.as_deref(),
        &a.service.set,
        a.steps,
        &a.actors,
        &a.subscribers,
        a.reps as usize,
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", r.table());
    }
    Ok(())
}

pub fn learner(a: BenchLearnerArgs) -> Result<()> {
    let settings = a.service.settings()?;
    model::device::use_device(tch::Device::Cpu, a.threads.unwrap_or(0))?;
    let task = FolkTask::new(
        Dataset::load(&settings.paths.data)?,
        PathBuf::new(),
        PathBuf::new(),
    );
    let cfg = StepBenchConfig {
        learner: settings.learner.clone(),
        new_tokens: a
            .new_tokens
            .map_or(settings.actor.max_new_tokens, |n| n as usize),
        reps: a.reps as usize,
        compare_steps: a.compare_steps as usize,
        python: a.reference.python(),
        script: PathBuf::from("scripts/reference_learner.py"),
        structure: Some(folk::metrical::python_port(&task.dataset().vocab)),
    };
    let r = bench_step(&settings.paths.base, &task, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", r.table());
    }
    Ok(())
}

pub fn pretrain(a: BenchPretrainArgs) -> Result<()> {
    let device = a.compute.apply()?;
    let cfg = PretrainBenchConfig {
        device,
        data: a.data,
        checkpoint: a.checkpoint,
        preset: a.preset,
        batch_size: a.batch_size as usize,
        context: a.context as usize,
        lr: 3e-3,
        clip: 1.0,
        reps: a.reps as usize,
        python: a.reference.python(),
        script: PathBuf::from("scripts/reference_pretrain.py"),
    };
    let r = bench_pretrain(&cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", r.table());
    }
    Ok(())
}

pub fn scaling(a: BenchScalingArgs) -> Result<()> {
    let settings = a.service.settings()?;
    model::device::use_device(tch::Device::Cpu, a.threads.unwrap_or(0))?;
    for (flag, values) in [("--prompts", &a.prompts), ("--batches", &a.batches)] {
        anyhow::ensure!(
            values.iter().all(|&v| (1..=1024).contains(&v)),
            "{flag} takes counts from 1 to 1024"
        );
    }
    anyhow::ensure!(
        a.lengths.iter().all(|&v| (1..=4096).contains(&v)),
        "--lengths takes token counts from 1 to 4096"
    );
    let task = FolkTask::new(
        Dataset::load(&settings.paths.data)?,
        PathBuf::new(),
        PathBuf::new(),
    );
    let cfg = ScalingConfig {
        learner: settings.learner.clone(),
        prompts: a.prompts,
        lengths: a.lengths,
        presets: a.presets,
        batches: a.batches,
        length: a.length as usize,
        reps: a.reps as usize,
        out: a.out,
    };
    let points = bench_scaling(&task, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&points)?);
        return Ok(());
    }
    println!("series      preset  parameters  batch  tokens  step s   GFLOP   tokens/s  with CFG");
    for p in &points {
        let opt =
            |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        println!(
            "{:<11} {:<7} {:>10}  {:>5}  {:>6}  {:>6}  {:>6}  {:>9}  {:>8}",
            p.series,
            p.preset,
            p.parameters,
            p.batch,
            p.tokens_per_sample,
            opt(p.step_seconds, 3),
            opt(p.step_gflop, 1),
            opt(p.tokens_per_s, 0),
            opt(p.tokens_per_s_cfg, 0)
        );
    }
    println!(
        "wrote {} and {} (and .svg)",
        cfg.out.join("scaling.csv").display(),
        cfg.out.join("scaling.png").display()
    );
    Ok(())
}

pub fn faults(a: BenchFaultsArgs) -> Result<()> {
    let cfg = FaultsConfig {
        idle_watchers: a.idle_watchers,
        idle_pushes: a.idle_pushes,
        heavy_streams: a.heavy_streams,
        oversize_messages: a.oversize_messages,
        malformed: a.malformed,
        actor_kills: a.actor_kills,
        learner_kills: a.learner_kills,
        seed: a.seed,
    };
    let r = bench_faults(a.service.config.as_deref(), &a.service.set, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(())
}
