//! The sweep's runs: each run folder's student, β, seed and teacher (from the student's
//! metadata, else `run-config.toml`), checked against the base model and one another,
//! and the β = 0 runs' earlier checkpoints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use common::settings::Settings;
use model::checkpoint::{Checkpoint, ModelKind};
use model::task::Task;

use super::{RunInfo, SweepConfig, Teacher};

/// β, seed and teacher of a run: the learner records them in the student's metadata;
/// `qd run` also leaves its effective settings in `run-config.toml` (older students).
pub(super) fn run_info(dir: &Path, ck: &Checkpoint) -> Result<RunInfo> {
    let extra = &ck.meta.extra;
    let num = |k: &str| extra.get(k).and_then(serde_json::Value::as_f64);
    let stamped = (|| {
        Some(RunInfo {
            dir: dir.to_path_buf(),
            beta: num("beta")?,
            seed: extra.get("seed")?.as_u64()?,
            teacher: Teacher {
                gamma: num("cfg_gamma")?,
                scope: serde_json::from_value(extra.get("cfg_scope")?.clone()).ok()?,
                plausibility: num("cfg_plausibility")?,
            },
        })
    })();
    if let Some(run) = stamped {
        return Ok(run);
    }
    let config = dir.join("run-config.toml");
    if config.exists() {
        let l = Settings::load_from(Some(&config), &[], &[])?.learner;
        return Ok(RunInfo {
            dir: dir.to_path_buf(),
            beta: l.beta,
            seed: l.seed,
            teacher: Teacher {
                gamma: l.cfg_gamma,
                scope: l.cfg_scope,
                plausibility: l.cfg_plausibility,
            },
        });
    }
    bail!(
        "{} does not say its β and teacher: its student's metadata lacks them and there is no run-config.toml",
        dir.display()
    )
}

/// The runs and their students, by increasing β; the first has β = 0.
pub(super) fn read_runs(
    cfg: &SweepConfig,
    task: &dyn Task,
    base: &Checkpoint,
) -> Result<(Vec<RunInfo>, Vec<Checkpoint>)> {
    let mut runs = Vec::with_capacity(cfg.runs.len());
    for dir in &cfg.runs {
        if !dir.is_dir() {
            bail!(
                "run folder {} does not exist (train it with `qd run --config …` first)",
                dir.display()
            );
        }
        let student = dir.join("student.safetensors");
        if !student.exists() {
            bail!(
                "{} has no student.safetensors: the run has not written a checkpoint yet",
                dir.display()
            );
        }
        let ck = Checkpoint::read_for(&student, ModelKind::Policy, &task.vocab_hash())?;
        ck.check_compatible(&base.meta.config, &base.meta.vocab_hash)
            .with_context(|| {
                format!(
                    "{} cannot be compared with the base model {}",
                    student.display(),
                    cfg.base.display()
                )
            })?;
        let run = run_info(dir, &ck)?;
        let beta = run.beta;
        if !beta.is_finite() || beta < 0.0 {
            bail!("{}: β = {beta} is not a non-negative number", dir.display());
        }
        if let Some((other, _)) = runs
            .iter()
            .find(|(r, _): &&(RunInfo, Checkpoint)| r.beta == beta && r.seed == run.seed)
        {
            bail!(
                "{} and {} both have β = {beta} and seed {}: repeated runs of a β need different seeds",
                other.dir.display(),
                dir.display(),
                run.seed
            );
        }
        if let Some((other, _)) = runs
            .iter()
            .find(|(r, _): &&(RunInfo, Checkpoint)| r.teacher != run.teacher)
        {
            bail!(
                "{} was distilled from {} but {} from {}: a sweep compares runs of one teacher",
                other.dir.display(),
                other.teacher,
                dir.display(),
                run.teacher
            );
        }
        runs.push((run, ck));
    }
    runs.sort_by(|a, b| a.0.beta.total_cmp(&b.0.beta).then(a.0.seed.cmp(&b.0.seed)));
    if runs.first().is_none_or(|(r, _)| r.beta != 0.0) {
        bail!(
            "no run with β = 0 among --runs ({}): the LERP families start from the pure distillation model",
            cfg.runs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(runs.into_iter().unzip())
}

/// A β = 0 run's checkpoint from earlier in its training.
pub(super) struct Earlier {
    /// Index of its run.
    pub(super) run: usize,
    pub(super) step: u64,
    pub(super) path: PathBuf,
    pub(super) ck: Checkpoint,
}

/// The checkpoints the β = 0 runs kept (`checkpoints/step-<n>.safetensors`; the run's
/// `learner.keep_checkpoints` says how many), by run and step: the `distil-less` control.
pub(super) fn earlier_students(
    runs: &[RunInfo],
    zeros: &[usize],
    task: &dyn Task,
    base: &Checkpoint,
) -> Result<Vec<Earlier>> {
    let mut out = Vec::new();
    for &run in zeros {
        let found = model::checkpoint::numbered(&runs[run].dir.join("checkpoints"));
        for (step, path) in found {
            let ck = Checkpoint::read_for(&path, ModelKind::Policy, &task.vocab_hash())
                .with_context(|| format!("reading the earlier checkpoint {}", path.display()))?;
            ck.check_compatible(&base.meta.config, &base.meta.vocab_hash)
                .with_context(|| {
                    format!("{} cannot be compared with the base model", path.display())
                })?;
            out.push(Earlier {
                run,
                step,
                path,
                ck,
            });
        }
    }
    Ok(out)
}
