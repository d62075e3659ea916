//! `qd bench scaling`: how the cost grows. The learner's whole step (as `qd bench
//! learner` times it) against the prompts per batch, the sample length and the model
//! preset, and generation tokens/s against the batch; each point on freshly initialised
//! weights (speed does not depend on them) with `<eos>` disallowed, so that every sample
//! has exactly the stated length. Written as `scaling.csv` and `scaling.png`/`.svg`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use tch::nn::VarStore;
use tch::Device;

use crate::generate::{bench_generate, BenchConfig};
use common::settings::LearnerSettings;
use eval::plot::{color, write, Panel, Series};
use folk::metrical::Metrical;
use folk::FolkTask;
use learner::loss::{Generatable, LENGTH_GROUPS};
use model::config::Preset;
use model::optim::AdamW;
use model::structure::Structure;
use model::task::Task;
use model::transformer::Transformer;

use super::learner::{adamw_config, batch, step_flop, timed_steps};

/// The grid.
#[derive(Clone, Debug)]
pub struct ScalingConfig {
    pub learner: LearnerSettings,
    /// Prompts per batch (2 samples each), at `length` tokens, `small`.
    pub prompts: Vec<usize>,
    /// Tokens per sample, at 8 prompts, `small`.
    pub lengths: Vec<usize>,
    /// Presets, at 8 prompts × `length` tokens.
    pub presets: Vec<Preset>,
    /// Generation batch sizes (128 tokens a row, `small`).
    pub batches: Vec<usize>,
    /// The length of the prompts and presets series.
    pub length: usize,
    pub reps: usize,
    pub out: PathBuf,
}

/// One measured point.
#[derive(Clone, Debug, Serialize)]
pub struct ScalingPoint {
    /// `prompts`, `length`, `preset` (learner steps) or `generation`.
    pub series: &'static str,
    pub preset: String,
    pub parameters: i64,
    /// Prompts of a learner batch, or rows of a generation batch.
    pub batch: usize,
    pub tokens_per_sample: usize,
    /// Median seconds of a learner step (learner series).
    pub step_seconds: Option<f64>,
    /// GFLOP of the step as qd computes it (learner series).
    pub step_gflop: Option<f64>,
    /// Tokens/s without and with CFG γ = 3 (generation series).
    pub tokens_per_s: Option<f64>,
    pub tokens_per_s_cfg: Option<f64>,
}

/// Runs the grid, writes the CSV and the figure, and returns the points.
pub fn bench_scaling(task: &FolkTask, cfg: &ScalingConfig) -> Result<Vec<ScalingPoint>> {
    let mut points = Vec::new();
    let fixed_prompts = 8;
    for &p in &cfg.prompts {
        points.push(learner_point(
            task,
            cfg,
            "prompts",
            Preset::Small,
            p,
            cfg.length,
        )?);
    }
    for &t in &cfg.lengths {
        points.push(learner_point(
            task,
            cfg,
            "length",
            Preset::Small,
            fixed_prompts,
            t,
        )?);
    }
    for &preset in &cfg.presets {
        points.push(learner_point(
            task,
            cfg,
            "preset",
            preset,
            fixed_prompts,
            cfg.length,
        )?);
    }
    let (_vs, model, parameters) = fresh(task, Preset::Small, 128)?;
    let dir = tempfile::tempdir()?;
    for &b in &cfg.batches {
        eprintln!("bench scaling: generation, batch {b}…");
        let g = bench_generate(
            &model,
            &dir.path().join("unused.safetensors"),
            task,
            &BenchConfig {
                batch: b,
                new_tokens: 128,
                reps: cfg.reps,
                cfg_gamma: 3.0,
                python: None,
                script: PathBuf::new(),
                structure: None,
            },
        )?;
        points.push(ScalingPoint {
            series: "generation",
            preset: "small".into(),
            parameters,
            batch: b,
            tokens_per_sample: 128,
            step_seconds: None,
            step_gflop: None,
            tokens_per_s: Some(g.qd_plain),
            tokens_per_s_cfg: Some(g.qd_cfg),
        });
    }
    std::fs::create_dir_all(&cfg.out)?;
    write_csv(&cfg.out.join("scaling.csv"), &points)?;
    plot(&cfg.out.join("scaling"), &points)?;
    Ok(points)
}

/// A fresh `preset` model over the task's vocabulary with positions for `tokens` after
/// the longest prompt, and its parameter count.
fn fresh(task: &FolkTask, preset: Preset, tokens: usize) -> Result<(VarStore, Transformer, i64)> {
    tch::manual_seed(0);
    let mut config = preset.config(task.vocab_size());
    config.max_len = config.max_len.max(tokens as i64 + 64);
    config.structure = Some(Metrical::new(&task.dataset().vocab).spec());
    config.validate().map_err(anyhow::Error::msg)?;
    let vs = VarStore::new(Device::Cpu);
    let model = Transformer::new(&vs.root(), &config);
    let parameters = vs.variables().values().map(|t| t.numel() as i64).sum();
    Ok((vs, model, parameters))
}

fn learner_point(
    task: &FolkTask,
    cfg: &ScalingConfig,
    series: &'static str,
    preset: Preset,
    prompts: usize,
    tokens: usize,
) -> Result<ScalingPoint> {
    eprintln!(
        "bench scaling: learner step, {preset:?}, {prompts} prompts × 2 samples × {tokens} tokens…"
    );
    let (mut teacher_vs, teacher, parameters) = fresh(task, preset, tokens)?;
    teacher_vs.freeze();
    let (student_vs, student, _) = fresh(task, preset, tokens)?;
    let config = student.config.clone();
    let pairs = batch(&student, task, prompts, tokens, true)?;
    let g = Generatable::new(
        task.vocabulary().clone(),
        config.vocab_size as usize,
        Device::Cpu,
    );
    let mut opt = AdamW::new(&student_vs, adamw_config(&cfg.learner));
    // One step first: the optimizer's state and the allocator warm up.
    timed_steps(&student, &teacher, &mut opt, &g, &pairs, &cfg.learner, 1)?;
    let seconds = timed_steps(
        &student,
        &teacher,
        &mut opt,
        &g,
        &pairs,
        &cfg.learner,
        cfg.reps,
    )?;
    Ok(ScalingPoint {
        series,
        preset: format!("{preset:?}").to_lowercase(),
        parameters,
        batch: pairs.len(),
        tokens_per_sample: tokens,
        step_seconds: Some(seconds),
        step_gflop: Some(step_flop(&config, &pairs, LENGTH_GROUPS) / 1e9),
        tokens_per_s: None,
        tokens_per_s_cfg: None,
    })
}

fn write_csv(path: &Path, points: &[ScalingPoint]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for p in points {
        w.serialize(p)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    model::fsutil::write_atomic(path, &bytes)
}

fn plot(stem: &Path, points: &[ScalingPoint]) -> Result<()> {
    let of = |series: &'static str| points.iter().filter(move |p| p.series == series);
    let step = |series: &'static str, x: &dyn Fn(&ScalingPoint) -> f64| -> Vec<(f64, f64)> {
        of(series)
            .filter_map(|p| Some((x(p), p.step_seconds?)))
            .collect()
    };
    let panels = [
        Panel::new(
            "learner step against prompts per batch (small, 2 samples each)",
            "prompts",
            "seconds",
            vec![Series::line("step", color(0), step("prompts", &|p| p.batch as f64)).markers()],
        ),
        Panel::new(
            "learner step against sample length (small, 8 prompts)",
            "tokens per sample",
            "seconds",
            vec![Series::line(
                "step",
                color(1),
                step("length", &|p| p.tokens_per_sample as f64),
            )
            .markers()],
        ),
        Panel::new(
            "learner step against model size (8 prompts)",
            "parameters (millions)",
            "seconds",
            vec![Series::line(
                "step",
                color(4),
                step("preset", &|p| p.parameters as f64 / 1e6),
            )
            .markers()],
        ),
        Panel::new(
            "generation against batch (small, 128 tokens a row)",
            "rows",
            "tokens/s",
            vec![
                Series::line(
                    "no CFG",
                    color(5),
                    of("generation")
                        .filter_map(|p| Some((p.batch as f64, p.tokens_per_s?)))
                        .collect(),
                )
                .markers(),
                Series::line(
                    "CFG γ = 3",
                    color(2),
                    of("generation")
                        .filter_map(|p| Some((p.batch as f64, p.tokens_per_s_cfg?)))
                        .collect(),
                )
                .markers(),
            ],
        ),
    ];
    write(stem, "How the cost grows (qd bench scaling)", &panels)
}
