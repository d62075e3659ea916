//! `qd sweep`: the paper's comparison on one set of held-out prompts and seeds. Every
//! operating point is a policy (a checkpoint or a merge of checkpoints) with a way of
//! sampling it, evaluated by `crate::evaluate::evaluate` with the same `EvalConfig`:
//!
//! | family | model | parameter |
//! | --- | --- | --- |
//! | `beta` | each run's student, no CFG | β of the run |
//! | `cfg` | the base model with CFG (γ = 1: no guidance) | γ |
//! | `temperature-base` | the base model, no CFG | temperature T |
//! | `temperature-beta0` | the β = 0 student, no CFG | temperature T |
//! | `plausibility` | the base model, the plausibility constraint alone (no guidance) | α |
//! | `distil-less` | each β = 0 run's earlier checkpoints, no CFG | learner step |
//! | `lerp` | `(1−λ)·θ_β=0 + λ·θ_diverse`, no CFG | λ |
//! | `lerp-base` | `(1−λ)·θ_β=0 + λ·θ_base`, no CFG | λ |
//! | `average` | the uniform average of every run's student | number of models |
//!
//! The diverse end of `lerp` is the β > 0 with the highest mean embedding diversity over
//! its runs. The LERP families and `distil-less` are made for every β = 0 run (seed), each
//! merged with the diverse β's run of the same seed where there is one: like the `beta`
//! family they are points over runs, and the summary's intervals resample runs and
//! prompts together. Merged weights are made in memory. Temperature, the plausibility
//! constraint alone, LERP toward the base model and distilling for fewer steps are the
//! baselines the diversity reward is measured against (`summary::baselines`).
//!
//! Cache: each point is written to `out/points/<family>-<param>.json` with its report and
//! a key, the SHA-256 of the evaluation context (the test prompts used, the embedder's
//! and judge's files, samples, seed, batch, token budget, device), the policy's weights
//! (architecture, tensor names and bytes) and the sampling settings. A point whose key
//! was evaluated before (by this run or an earlier one) is not evaluated again, so a
//! re-run evaluates only what changed, and points with bit-identical weights and
//! sampling share one evaluation (LERP at λ = 0 and 1 is its end points, CFG at γ = 1 is
//! temperature sampling at T = 1).

mod baselines;
mod cache;
mod figures;
mod markdown;
mod runs;
mod sample;
mod summary;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

use model::checkpoint::{Checkpoint, ModelKind};
use model::fsutil::write_atomic;
use model::sampling::{CfgScope, SamplingConfig};
use model::task::{Split, Task};

use crate::evaluate::EvalReport;

use cache::{Evaluator, Weights};
use figures::write_plots;
use markdown::csv;
use runs::{earlier_students, read_runs};
use summary::summarize;

pub use cache::weights_fingerprint;
pub use summary::{chord, Chord, FamilyFront, Named, Summary, REFERENCE};

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// Run folders of the β sweep, each with `student.safetensors`.
    pub runs: Vec<PathBuf>,
    pub base: PathBuf,
    pub out: PathBuf,
    /// The held-out split the prompts come from.
    pub split: Split,
    /// Held-out prompts: a stratified sample of the split
    /// (`crate::evaluate::select_prompts`), the same for every point.
    pub prompts: usize,
    /// Samples per prompt.
    pub samples: usize,
    pub seed: u64,
    pub batch: usize,
    pub max_new_tokens: usize,
    pub gammas: Vec<f64>,
    pub temperatures: Vec<f64>,
    /// Thresholds α of the plausibility constraint alone on the base model.
    pub plausibilities: Vec<f64>,
    pub lambdas: Vec<f64>,
    pub device: Device,
    pub progress: bool,
}

/// A family of operating points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Beta,
    Cfg,
    TemperatureBase,
    TemperatureBeta0,
    Plausibility,
    DistilLess,
    Lerp,
    LerpBase,
    Average,
}

impl Family {
    pub const ALL: [Family; 9] = [
        Family::Beta,
        Family::Cfg,
        Family::TemperatureBase,
        Family::TemperatureBeta0,
        Family::Plausibility,
        Family::DistilLess,
        Family::Lerp,
        Family::LerpBase,
        Family::Average,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Beta => "beta",
            Family::Cfg => "cfg",
            Family::TemperatureBase => "temperature-base",
            Family::TemperatureBeta0 => "temperature-beta0",
            Family::Plausibility => "plausibility",
            Family::DistilLess => "distil-less",
            Family::Lerp => "lerp",
            Family::LerpBase => "lerp-base",
            Family::Average => "average",
        }
    }

    /// What the family is, for legends and tables.
    pub fn describe(self) -> &'static str {
        match self {
            Family::Beta => "β-sweep students",
            Family::Cfg => "base model, CFG γ",
            Family::TemperatureBase => "base model, temperature",
            Family::TemperatureBeta0 => "β = 0 student, temperature",
            Family::Plausibility => "base model, plausibility constraint alone",
            Family::DistilLess => "β = 0 student, fewer steps",
            Family::Lerp => "LERP β = 0 → most diverse",
            Family::LerpBase => "LERP β = 0 → base",
            Family::Average => "average of the β models",
        }
    }

    /// The parameter's value as people read it: `γ = 1.5`, `λ = 0.3`, `4 models`.
    pub fn param_text(self, p: f64) -> String {
        match self {
            Family::Beta => format!("β = {p}"),
            Family::Cfg => format!("γ = {p}"),
            Family::TemperatureBase | Family::TemperatureBeta0 => format!("T = {p}"),
            Family::Plausibility => format!("α = {p}"),
            Family::DistilLess => format!("step {p}"),
            Family::Lerp | Family::LerpBase => format!("λ = {p}"),
            Family::Average => format!("{p} models"),
        }
    }
}

/// One evaluated operating point.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub family: Family,
    pub param: f64,
    /// The training seed of the run a row's model comes from (`beta`, `distil-less` and
    /// the LERP families: several runs may share a parameter); `None` for one model.
    pub seed: Option<u64>,
    pub report: EvalReport,
}

impl Row {
    /// The point on the (quality, embedding diversity) plane.
    pub fn point(&self) -> crate::front::Point {
        crate::front::Point {
            quality: self.report.quality,
            diversity: self.report.embed_diversity,
        }
    }
}

/// One run of the β sweep.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub dir: PathBuf,
    pub beta: f64,
    /// The learner's seed (runs of one β differ by it).
    pub seed: u64,
    pub teacher: Teacher,
}

/// The CFG teacher a run was distilled from (the learner stamps it on the student).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Teacher {
    pub gamma: f64,
    pub scope: CfgScope,
    /// The plausibility constraint (0: none).
    pub plausibility: f64,
}

impl Teacher {
    /// How the base model is sampled as this teacher at strength `gamma` (γ = 1: no
    /// guidance, plain conditional sampling).
    pub fn sampling(&self, gamma: f64, max_new_tokens: usize) -> SamplingConfig {
        let plain = SamplingConfig {
            max_new_tokens,
            ..SamplingConfig::default()
        };
        if gamma == 1.0 {
            // Exactly the plain setting (scope and plausibility apply to guidance only),
            // so that the unguided point shares its evaluation with the base at T = 1.
            return plain;
        }
        SamplingConfig {
            cfg_gamma: Some(gamma),
            cfg_plausibility: (self.plausibility > 0.0).then_some(self.plausibility),
            cfg_scope: self.scope,
            ..plain
        }
    }
}

impl std::fmt::Display for Teacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CFG γ = {}, scope {}", self.gamma, self.scope)?;
        if self.plausibility > 0.0 {
            write!(f, ", plausibility {}", self.plausibility)?;
        }
        Ok(())
    }
}

/// Sorts and de-duplicates a grid after checking every value.
fn grid(name: &str, values: &[f64], ok: impl Fn(f64) -> bool, what: &str) -> Result<Vec<f64>> {
    if values.is_empty() {
        bail!("{name} needs at least one value");
    }
    if let Some(v) = values.iter().find(|v| !ok(**v)) {
        bail!("{name}: {v} is not {what}");
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.dedup();
    Ok(v)
}

/// λ from 0 to 1 in steps of 0.1 (`fine`: 0.05); each value is `i / n` exactly.
pub fn default_lambdas(fine: bool) -> Vec<f64> {
    let n = if fine { 20 } else { 10 };
    (0..=n).map(|i| f64::from(i) / f64::from(n)).collect()
}

/// Runs the sweep and writes its outputs into `cfg.out`.
pub fn sweep(cfg: &SweepConfig, task: &dyn Task) -> Result<Summary> {
    let mut gammas = grid(
        "--cfg",
        &cfg.gammas,
        |g| g.is_finite() && g >= 0.0,
        "a guidance strength ≥ 0",
    )?;
    let temperatures = grid(
        "--temperatures",
        &cfg.temperatures,
        |t| t.is_finite() && t > 0.0,
        "a positive temperature",
    )?;
    let plausibilities = if cfg.plausibilities.is_empty() {
        Vec::new()
    } else {
        grid(
            "--plausibility",
            &cfg.plausibilities,
            |a| a > 0.0 && a < 1.0,
            "a threshold in (0, 1)",
        )?
    };
    let lambdas = grid(
        "--lambdas",
        &cfg.lambdas,
        |l| (0.0..=1.0).contains(&l),
        "in [0, 1]",
    )?;
    if cfg.runs.is_empty() {
        bail!("--runs needs at least the β = 0 run folder");
    }
    if cfg.prompts < 2 || cfg.samples < 2 {
        bail!(
            "--prompts and --samples must be at least 2 (diversity compares samples and prompts)"
        );
    }
    let held_out = task.prompts(cfg.split).len();
    if held_out < 2 {
        bail!(
            "the task has {held_out} {:?} prompts; the sweep needs 2",
            cfg.split
        );
    }
    let base = Checkpoint::read_for(&cfg.base, ModelKind::Policy, &task.vocab_hash())
        .with_context(|| format!("reading the base model {}", cfg.base.display()))?;
    let (runs, students) = read_runs(cfg, task, &base)?;
    // The CFG family is drawn as the runs' teacher was, and always holds the teacher and
    // the unguided base (γ = 1).
    let teacher = runs[0].teacher;
    for g in [1.0, teacher.gamma] {
        if !gammas.contains(&g) {
            gammas.push(g);
        }
    }
    gammas.sort_by(f64::total_cmp);
    let embedder = task.embedder(cfg.device)?;
    let judge = task.judge(cfg.device)?;
    std::fs::create_dir_all(cfg.out.join("points"))
        .with_context(|| format!("creating {}", cfg.out.join("points").display()))?;

    // Each β's first run (lowest seed) stands for it in the average.
    let first_of_beta: Vec<usize> = (0..runs.len())
        .filter(|&i| i == 0 || runs[i - 1].beta != runs[i].beta)
        .collect();
    let has_diverse = first_of_beta.len() > 1;
    let zeros: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].beta == 0.0).collect();
    let earlier = earlier_students(&runs, &zeros, task, &base)?;
    let total = runs.len()
        + gammas.len()
        + 2 * temperatures.len()
        + plausibilities.len()
        + earlier.len()
        + lambdas.len() * zeros.len() * (1 + usize::from(has_diverse))
        + usize::from(has_diverse);
    let mut ev = Evaluator::new(cfg, task, embedder.as_ref(), judge.as_ref(), total as u64)?;
    let plain = |temperature: f64| SamplingConfig {
        temperature,
        max_new_tokens: cfg.max_new_tokens,
        ..SamplingConfig::default()
    };
    let base_name = cfg.base.display().to_string();
    let student_name = |r: &RunInfo| r.dir.join("student.safetensors").display().to_string();

    for (run, ck) in runs.iter().zip(&students) {
        ev.point(
            Point::run(Family::Beta, run.beta, run.seed),
            student_name(run),
            Weights::Checkpoint(ck),
            plain(1.0),
        )?;
    }
    // The diverse end: the β > 0 whose runs have the highest mean embedding diversity
    // (ties: the larger β).
    let mean_diversity = |beta: f64| {
        let d: Vec<f64> = ev
            .rows()
            .iter()
            .filter(|r| r.family == Family::Beta && r.param == beta)
            .map(|r| r.report.embed_diversity)
            .collect();
        d.iter().sum::<f64>() / d.len().max(1) as f64
    };
    let most_diverse = first_of_beta[1..].iter().copied().max_by(|&a, &b| {
        mean_diversity(runs[a].beta)
            .total_cmp(&mean_diversity(runs[b].beta))
            .then(runs[a].beta.total_cmp(&runs[b].beta))
    });
    let (zero, zero_ck) = (&runs[0], &students[0]);
    for &g in &gammas {
        ev.point(
            Point::of(Family::Cfg, g),
            base_name.clone(),
            Weights::Checkpoint(&base),
            teacher.sampling(g, cfg.max_new_tokens),
        )?;
    }
    for &t in &temperatures {
        ev.point(
            Point::of(Family::TemperatureBase, t),
            base_name.clone(),
            Weights::Checkpoint(&base),
            plain(t),
        )?;
    }
    for &t in &temperatures {
        ev.point(
            Point::of(Family::TemperatureBeta0, t),
            student_name(zero),
            Weights::Checkpoint(zero_ck),
            plain(t),
        )?;
    }
    for &a in &plausibilities {
        ev.point(
            Point::of(Family::Plausibility, a),
            base_name.clone(),
            Weights::Checkpoint(&base),
            SamplingConfig {
                cfg_plausibility: Some(a),
                ..plain(1.0)
            },
        )?;
    }
    for e in &earlier {
        ev.point(
            Point::run(Family::DistilLess, e.step as f64, runs[e.run].seed),
            e.path.display().to_string(),
            Weights::Checkpoint(&e.ck),
            plain(1.0),
        )?;
    }
    for &z in &zeros {
        let (run, ck) = (&runs[z], &students[z]);
        if let Some(d) = most_diverse {
            // The diverse β's run of the same seed, or its first.
            let beta = runs[d].beta;
            let pair = (0..runs.len())
                .find(|&i| runs[i].beta == beta && runs[i].seed == run.seed)
                .unwrap_or(d);
            for &l in &lambdas {
                let model = format!(
                    "lerp {} → {}, λ = {l}",
                    student_name(run),
                    student_name(&runs[pair])
                );
                ev.point(
                    Point::run(Family::Lerp, l, run.seed),
                    model,
                    Weights::Lerp(ck, &students[pair], l),
                    plain(1.0),
                )?;
            }
        }
        for &l in &lambdas {
            let model = format!("lerp {} → {base_name}, λ = {l}", student_name(run));
            ev.point(
                Point::run(Family::LerpBase, l, run.seed),
                model,
                Weights::Lerp(ck, &base, l),
                plain(1.0),
            )?;
        }
    }
    if has_diverse {
        let firsts: Vec<&Checkpoint> = first_of_beta.iter().map(|&i| &students[i]).collect();
        let model = format!(
            "average of {}",
            first_of_beta
                .iter()
                .map(|&i| student_name(&runs[i]))
                .collect::<Vec<_>>()
                .join(", ")
        );
        ev.point(
            Point::of(Family::Average, first_of_beta.len() as f64),
            model,
            Weights::Average(firsts),
            plain(1.0),
        )?;
    }
    let (rows, evaluated, cached) = ev.finish();

    let most_diverse = most_diverse.map(|i| runs[i].clone());
    let mut summary = summarize(cfg, runs, most_diverse, rows, evaluated, cached);
    summary.plots = write_plots(&cfg.out, &summary)?;
    write_atomic(&cfg.out.join("sweep.csv"), &csv(&summary.rows)?)?;
    write_atomic(
        &cfg.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    write_atomic(&cfg.out.join("summary.md"), summary.markdown().as_bytes())?;
    Ok(summary)
}

/// Which operating point a row is: its family, parameter and (for a run) seed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Point {
    pub family: Family,
    pub param: f64,
    pub seed: Option<u64>,
}

impl Point {
    fn of(family: Family, param: f64) -> Point {
        Point {
            family,
            param,
            seed: None,
        }
    }

    fn run(family: Family, param: f64, seed: u64) -> Point {
        Point {
            family,
            param,
            seed: Some(seed),
        }
    }

    /// The cached point's file name: `<family>-<param>[-seed-<seed>].json`.
    pub(super) fn file_name(&self) -> String {
        match self.seed {
            Some(s) => format!("{}-{}-seed-{s}.json", self.family.name(), self.param),
            None => format!("{}-{}.json", self.family.name(), self.param),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn lambda_grids_are_exact_tenths_and_twentieths() {
        let l = default_lambdas(false);
        assert_eq!(l.len(), 11);
        assert_eq!((l[0], l[3], l[10]), (0.0, 0.3, 1.0));
        let f = default_lambdas(true);
        assert_eq!(f.len(), 21);
        assert_eq!((f[1], f[7], f[20]), (0.05, 0.35, 1.0));
        assert_eq!(format!("{}", f[7]), "0.35");
    }

    #[test]
    fn grids_are_checked_sorted_and_deduplicated() {
        let ok = |v: f64| (0.0..=1.0).contains(&v);
        assert_eq!(
            grid("--lambdas", &[1.0, 0.5, 0.5, 0.0], ok, "in [0, 1]").unwrap(),
            [0.0, 0.5, 1.0]
        );
        let e = grid("--lambdas", &[0.5, 1.5], ok, "in [0, 1]").unwrap_err();
        assert_eq!(e.to_string(), "--lambdas: 1.5 is not in [0, 1]");
        assert!(grid("--lambdas", &[f64::NAN], ok, "in [0, 1]").is_err());
        assert!(grid("--lambdas", &[], ok, "in [0, 1]").is_err());
    }
}
