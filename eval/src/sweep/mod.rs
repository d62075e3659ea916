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
//! | `lerp` | `(1−λ)·θ_β=0 + λ·θ_diverse`, no CFG | λ |
//! | `lerp-base` | `(1−λ)·θ_β=0 + λ·θ_base`, no CFG | λ |
//! | `average` | the uniform average of every run's student | number of models |
//!
//! The diverse end of `lerp` is the β > 0 student with the highest embedding diversity in
//! this sweep (its `beta` row). Merged weights are made in memory.
//!
//! Cache: each point is written to `out/points/<family>-<param>.json` with its report and
//! a key, the SHA-256 of the evaluation context (the test prompts used, the embedder's
//! and judge's files, samples, seed, batch, token budget, device), the policy's weights
//! (architecture, tensor names and bytes) and the sampling settings. A point whose key
//! was evaluated before (by this run or an earlier one) is not evaluated again, so a
//! re-run evaluates only what changed, and points with bit-identical weights and
//! sampling share one evaluation (LERP at λ = 0 and 1 is its end points, CFG at γ = 1 is
//! temperature sampling at T = 1).

mod plot;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use common::settings::Settings;
use model::checkpoint::{Checkpoint, CheckpointMeta, ModelKind};
use model::config::ModelConfig;
use model::fsutil::write_atomic;
use model::merge;
use model::sampling::SamplingConfig;
use model::task::{Embedder, Judge, Split, Task};
use model::train::progress_bar;
use model::transformer::Transformer;

use crate::evaluate::{evaluate, EvalConfig, EvalReport};
use crate::front::{dominates, hypervolume, Point};

/// Bumped when what a cached report means changes.
const CACHE_FORMAT: u32 = 2;

/// The reference point of every hypervolume: quality 0, embedding diversity 0 (both
/// metrics are non-negative, so every point counts).
pub const REFERENCE: Point = Point {
    quality: 0.0,
    diversity: 0.0,
};

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// Run folders of the β sweep, each with `student.safetensors`.
    pub runs: Vec<PathBuf>,
    pub base: PathBuf,
    pub out: PathBuf,
    /// Held-out test prompts (the first ones of the split).
    pub prompts: usize,
    /// Samples per prompt.
    pub samples: usize,
    pub seed: u64,
    pub batch: usize,
    pub max_new_tokens: usize,
    pub gammas: Vec<f64>,
    pub temperatures: Vec<f64>,
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
    Lerp,
    LerpBase,
    Average,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Beta,
        Family::Cfg,
        Family::TemperatureBase,
        Family::TemperatureBeta0,
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
    pub report: EvalReport,
}

impl Row {
    /// The point on the (quality, embedding diversity) plane.
    pub fn point(&self) -> Point {
        Point {
            quality: self.report.quality,
            diversity: self.report.embed_diversity,
        }
    }
}

/// One β run of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub dir: PathBuf,
    pub beta: f64,
}

/// A family's front.
#[derive(Clone, Debug, Serialize)]
pub struct FamilyFront {
    pub family: Family,
    pub points: usize,
    pub hypervolume: f64,
}

/// Where a LERP family lies against the straight line between its end points.
#[derive(Clone, Debug, Serialize)]
pub struct Chord {
    pub family: Family,
    /// Interior λ (strictly between 0 and 1) evaluated.
    pub interior: usize,
    pub quality_above: usize,
    pub diversity_above: usize,
    /// The largest quality gain over the line (negative: below it everywhere).
    pub max_quality_gain: f64,
    pub max_diversity_gain: f64,
}

/// A point named by family and parameter, with its coordinates.
#[derive(Clone, Debug, Serialize)]
pub struct Named {
    pub family: Family,
    pub param: f64,
    pub quality: f64,
    pub embed_diversity: f64,
}

impl Named {
    fn of(r: &Row) -> Named {
        Named {
            family: r.family,
            param: r.param,
            quality: r.report.quality,
            embed_diversity: r.report.embed_diversity,
        }
    }
}

/// What `out/summary.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub prompts: usize,
    pub samples: usize,
    pub seed: u64,
    pub base: PathBuf,
    pub runs: Vec<RunInfo>,
    /// The diverse end of the `lerp` family.
    pub most_diverse: Option<RunInfo>,
    pub reference: Point,
    pub fronts: Vec<FamilyFront>,
    /// The CFG point of highest quality.
    pub best_cfg: Option<Named>,
    /// Every other point that dominates it.
    pub dominating_best_cfg: Vec<Named>,
    pub chords: Vec<Chord>,
    pub points: usize,
    pub evaluated: usize,
    pub cached: usize,
    /// The figures written (PNG; an SVG lies beside each).
    pub plots: Vec<PathBuf>,
    pub rows: Vec<Row>,
}

/// A cached point (`out/points/<family>-<param>.json`).
#[derive(Debug, Serialize, Deserialize)]
struct PointFile {
    family: Family,
    param: f64,
    key: String,
    model: String,
    report: EvalReport,
}

/// The weights of an operating point: a checkpoint's, or merged ones.
enum Weights<'a> {
    Checkpoint(&'a Checkpoint),
    Lerp(&'a Checkpoint, &'a Checkpoint, f64),
    Average(&'a [Checkpoint]),
}

impl Weights<'_> {
    fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        match self {
            Weights::Checkpoint(ck) => Ok(ck
                .tensors()
                .map(|(n, t)| (n.to_string(), t.shallow_clone()))
                .collect()),
            Weights::Lerp(a, b, l) => merge::lerp(a, b, *l),
            Weights::Average(cks) => merge::average(cks),
        }
    }

    /// The metadata (architecture, vocabulary) the weights share.
    fn meta(&self) -> Result<&CheckpointMeta> {
        match self {
            Weights::Checkpoint(ck) | Weights::Lerp(ck, _, _) => Ok(&ck.meta),
            Weights::Average(cks) => cks.first().map(|c| &c.meta).context("nothing to average"),
        }
    }
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of a policy's architecture and named tensors (in name order): equal for
/// bit-identical weights whatever file or merge they come from.
pub fn weights_fingerprint(config: &ModelConfig, tensors: &[(String, Tensor)]) -> Result<String> {
    let mut named: Vec<&(String, Tensor)> = tensors.iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(config)?);
    for (name, t) in named {
        let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let n = t.numel();
        let mut bytes = vec![0u8; n * 4];
        t.f_copy_data_u8(&mut bytes, n)?;
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((n as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex(h.finalize()))
}

/// The key of one point: its evaluation context, weights and sampling.
fn point_key(context: &str, weights: &str, s: &SamplingConfig) -> String {
    let sampling = serde_json::json!({
        "temperature": s.temperature,
        "top_k": s.top_k,
        "cfg_gamma": s.cfg_gamma,
        "cfg_plausibility": s.cfg_plausibility,
        "max_new_tokens": s.max_new_tokens,
    });
    let mut h = Sha256::new();
    h.update(context.as_bytes());
    h.update(weights.as_bytes());
    h.update(sampling.to_string().as_bytes());
    hex(h.finalize())
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

/// β of a run: the learner records it in the student's metadata; `qd run` also leaves
/// its effective settings in `run-config.toml`.
fn run_beta(dir: &Path, ck: &Checkpoint) -> Result<f64> {
    if let Some(b) = ck
        .meta
        .extra
        .get("beta")
        .and_then(serde_json::Value::as_f64)
    {
        return Ok(b);
    }
    let config = dir.join("run-config.toml");
    if config.exists() {
        return Ok(Settings::load_from(Some(&config), &[], &[])?.learner.beta);
    }
    bail!(
        "{} does not say its β: its student has no `beta` in its metadata and there is no run-config.toml",
        dir.display()
    )
}

/// The runs and their students, by increasing β; the first has β = 0.
fn read_runs(
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
        let beta = run_beta(dir, &ck)?;
        if !beta.is_finite() || beta < 0.0 {
            bail!("{}: β = {beta} is not a non-negative number", dir.display());
        }
        if let Some((other, _)) = runs
            .iter()
            .find(|(r, _): &&(RunInfo, Checkpoint)| r.beta == beta)
        {
            bail!(
                "{} and {} both have β = {beta}: give one run per β",
                other.dir.display(),
                dir.display()
            );
        }
        runs.push((
            RunInfo {
                dir: dir.clone(),
                beta,
            },
            ck,
        ));
    }
    runs.sort_by(|a, b| a.0.beta.total_cmp(&b.0.beta));
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

/// Everything a point's evaluation needs.
struct Evaluator<'a> {
    cfg: &'a SweepConfig,
    task: &'a dyn Task,
    embedder: &'a dyn Embedder,
    judge: &'a dyn Judge,
    context: String,
    known: HashMap<String, EvalReport>,
    rows: Vec<Row>,
    evaluated: usize,
    cached: usize,
    bar: Option<indicatif::ProgressBar>,
}

impl Evaluator<'_> {
    fn log(&self, line: String) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Evaluates one point, or takes its report from the cache.
    fn point(
        &mut self,
        family: Family,
        param: f64,
        model: String,
        weights: Weights<'_>,
        sampling: SamplingConfig,
    ) -> Result<()> {
        let label = format!("{} {}", family.name(), family.param_text(param));
        if let Some(b) = &self.bar {
            b.set_message(label.clone());
        }
        let tensors = weights.tensors()?;
        let meta = weights.meta()?;
        let key = point_key(
            &self.context,
            &weights_fingerprint(&meta.config, &tensors)?,
            &sampling,
        );
        let (report, how) = match self.known.get(&key) {
            Some(r) => {
                self.cached += 1;
                (r.clone(), "cached".to_string())
            }
            None => {
                let t0 = Instant::now();
                let mut vs = VarStore::new(self.cfg.device);
                let policy = Transformer::new(&vs.root(), &meta.config);
                Checkpoint::from_tensors(meta.clone(), tensors).load_into(&mut vs)?;
                let eval = EvalConfig {
                    k: self.cfg.samples,
                    prompts: Some(self.cfg.prompts),
                    batch: self.cfg.batch,
                    sampling,
                    seed: self.cfg.seed,
                };
                let r = evaluate(&policy, self.task, self.embedder, self.judge, &eval)?;
                self.evaluated += 1;
                self.known.insert(key.clone(), r.clone());
                (
                    r,
                    format!("evaluated in {:.1} s", t0.elapsed().as_secs_f64()),
                )
            }
        };
        self.log(format!(
            "{label:<28} quality {:.4}  embedding diversity {:.4}  edit diversity {:.4}  ({how})",
            report.quality, report.embed_diversity, report.edit_diversity
        ));
        let file = PointFile {
            family,
            param,
            key,
            model,
            report: report.clone(),
        };
        write_atomic(
            &self
                .cfg
                .out
                .join("points")
                .join(format!("{}-{param}.json", family.name())),
            serde_json::to_string_pretty(&file)?.as_bytes(),
        )?;
        self.rows.push(Row {
            family,
            param,
            report,
        });
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        Ok(())
    }
}

/// Reports of every readable point file, by key.
fn cached_reports(dir: &Path) -> HashMap<String, EvalReport> {
    let mut known = HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<PointFile>(&b)?))
        {
            Ok(p) => {
                known.insert(p.key, p.report);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable cached point: {e}")
            }
        }
    }
    known
}

/// Hashes what every point of this sweep shares.
fn context_key(cfg: &SweepConfig, task: &dyn Task) -> Result<String> {
    let context = serde_json::json!({
        "format": CACHE_FORMAT,
        "task": task.name(),
        "task_fingerprint": task.fingerprint()?,
        "prompts": cfg.prompts,
        "samples": cfg.samples,
        "seed": cfg.seed,
        "batch": cfg.batch,
        "max_new_tokens": cfg.max_new_tokens,
        "device": format!("{:?}", cfg.device),
    });
    Ok(hex(Sha256::digest(context.to_string().as_bytes())))
}

/// Runs the sweep and writes its outputs into `cfg.out`.
pub fn sweep(cfg: &SweepConfig, task: &dyn Task) -> Result<Summary> {
    let gammas = grid(
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
    let test = task.prompts(Split::Test).len();
    if test < 2 {
        bail!("the task has {test} test prompts; the sweep needs 2");
    }
    let base = Checkpoint::read_for(&cfg.base, ModelKind::Policy, &task.vocab_hash())
        .with_context(|| format!("reading the base model {}", cfg.base.display()))?;
    let (runs, students) = read_runs(cfg, task, &base)?;
    let embedder = task.embedder(cfg.device)?;
    let judge = task.judge(cfg.device)?;
    std::fs::create_dir_all(cfg.out.join("points"))
        .with_context(|| format!("creating {}", cfg.out.join("points").display()))?;

    let has_diverse = runs.len() > 1;
    let total = runs.len()
        + gammas.len()
        + 2 * temperatures.len()
        + lambdas.len() * (1 + usize::from(has_diverse))
        + usize::from(has_diverse);
    let mut ev = Evaluator {
        cfg,
        task,
        embedder: embedder.as_ref(),
        judge: judge.as_ref(),
        context: context_key(cfg, task)?,
        known: cached_reports(&cfg.out.join("points")),
        rows: Vec::new(),
        evaluated: 0,
        cached: 0,
        bar: progress_bar(cfg.progress, total as u64, 0),
    };
    let plain = |temperature: f64| SamplingConfig {
        temperature,
        max_new_tokens: cfg.max_new_tokens,
        ..SamplingConfig::default()
    };
    let base_name = cfg.base.display().to_string();
    let student_name = |r: &RunInfo| r.dir.join("student.safetensors").display().to_string();

    for (run, ck) in runs.iter().zip(&students) {
        ev.point(
            Family::Beta,
            run.beta,
            student_name(run),
            Weights::Checkpoint(ck),
            plain(1.0),
        )?;
    }
    // The diverse end: the most diverse β > 0 student (ties: the larger β).
    let most_diverse = (1..runs.len()).max_by(|&a, &b| {
        let d = |i: usize| ev.rows[i].report.embed_diversity;
        d(a).total_cmp(&d(b))
            .then(runs[a].beta.total_cmp(&runs[b].beta))
    });
    let (zero, zero_ck) = (&runs[0], &students[0]);
    for &g in &gammas {
        let sampling = SamplingConfig {
            cfg_gamma: (g != 1.0).then_some(g),
            ..plain(1.0)
        };
        ev.point(
            Family::Cfg,
            g,
            base_name.clone(),
            Weights::Checkpoint(&base),
            sampling,
        )?;
    }
    for &t in &temperatures {
        ev.point(
            Family::TemperatureBase,
            t,
            base_name.clone(),
            Weights::Checkpoint(&base),
            plain(t),
        )?;
    }
    for &t in &temperatures {
        ev.point(
            Family::TemperatureBeta0,
            t,
            student_name(zero),
            Weights::Checkpoint(zero_ck),
            plain(t),
        )?;
    }
    if let Some(i) = most_diverse {
        let (diverse, diverse_ck) = (&runs[i], &students[i]);
        for &l in &lambdas {
            let model = format!(
                "lerp {} → {}, λ = {l}",
                student_name(zero),
                student_name(diverse)
            );
            ev.point(
                Family::Lerp,
                l,
                model,
                Weights::Lerp(zero_ck, diverse_ck, l),
                plain(1.0),
            )?;
        }
    }
    for &l in &lambdas {
        let model = format!("lerp {} → {base_name}, λ = {l}", student_name(zero));
        ev.point(
            Family::LerpBase,
            l,
            model,
            Weights::Lerp(zero_ck, &base, l),
            plain(1.0),
        )?;
    }
    if has_diverse {
        let model = format!(
            "average of {}",
            runs.iter().map(student_name).collect::<Vec<_>>().join(", ")
        );
        ev.point(
            Family::Average,
            runs.len() as f64,
            model,
            Weights::Average(&students),
            plain(1.0),
        )?;
    }
    if let Some(b) = &ev.bar {
        b.finish_and_clear();
    }

    let most_diverse = most_diverse.map(|i| runs[i].clone());
    let mut summary = summarize(cfg, runs, most_diverse, ev.rows, ev.evaluated, ev.cached);
    summary.plots = write_plots(&cfg.out, &summary)?;
    write_atomic(&cfg.out.join("sweep.csv"), csv(&summary.rows).as_bytes())?;
    write_atomic(
        &cfg.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    write_atomic(&cfg.out.join("summary.md"), summary.markdown().as_bytes())?;
    Ok(summary)
}

/// Fronts, the best CFG point, what dominates it, and LERP against its chord.
fn summarize(
    cfg: &SweepConfig,
    runs: Vec<RunInfo>,
    most_diverse: Option<RunInfo>,
    rows: Vec<Row>,
    evaluated: usize,
    cached: usize,
) -> Summary {
    let of = |f: Family| rows.iter().filter(move |r| r.family == f);
    let fronts = Family::ALL
        .iter()
        .filter(|f| of(**f).next().is_some())
        .map(|&family| {
            let pts: Vec<Point> = of(family).map(Row::point).collect();
            FamilyFront {
                family,
                points: pts.len(),
                hypervolume: hypervolume(&pts, REFERENCE),
            }
        })
        .collect();
    let best_cfg = of(Family::Cfg)
        .filter(|r| r.report.quality.is_finite())
        .max_by(|a, b| {
            a.report.quality.total_cmp(&b.report.quality).then(
                a.report
                    .embed_diversity
                    .total_cmp(&b.report.embed_diversity),
            )
        });
    let dominating_best_cfg = best_cfg
        .map(|best| {
            rows.iter()
                .filter(|r| r.family != Family::Cfg && dominates(r.point(), best.point()))
                .map(Named::of)
                .collect()
        })
        .unwrap_or_default();
    let chords = [Family::Lerp, Family::LerpBase]
        .into_iter()
        .filter_map(|f| chord(f, &rows))
        .collect();
    Summary {
        prompts: rows.first().map_or(cfg.prompts, |r| r.report.prompts),
        samples: cfg.samples,
        seed: cfg.seed,
        base: cfg.base.clone(),
        runs,
        most_diverse,
        reference: REFERENCE,
        fronts,
        best_cfg: best_cfg.map(Named::of),
        dominating_best_cfg,
        chords,
        points: rows.len(),
        evaluated,
        cached,
        plots: Vec::new(),
        rows,
    }
}

/// A LERP family against the straight line between its λ = 0 and λ = 1 points.
pub fn chord(family: Family, rows: &[Row]) -> Option<Chord> {
    let pts: Vec<&Row> = rows.iter().filter(|r| r.family == family).collect();
    let end = |l: f64| pts.iter().find(|r| r.param == l);
    let (a, b) = (end(0.0)?, end(1.0)?);
    let interior: Vec<&&Row> = pts
        .iter()
        .filter(|r| r.param > 0.0 && r.param < 1.0)
        .collect();
    let line = |l: f64, f: fn(&EvalReport) -> f64| (1.0 - l) * f(&a.report) + l * f(&b.report);
    let gains = |f: fn(&EvalReport) -> f64| -> Vec<f64> {
        interior
            .iter()
            .map(|r| f(&r.report) - line(r.param, f))
            .collect()
    };
    let q = gains(|r| r.quality);
    let d = gains(|r| r.embed_diversity);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Chord {
        family,
        interior: interior.len(),
        quality_above: q.iter().filter(|g| **g > 0.0).count(),
        diversity_above: d.iter().filter(|g| **g > 0.0).count(),
        max_quality_gain: max(&q),
        max_diversity_gain: max(&d),
    })
}

fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "family,param,quality,adherence,validity,embed_diversity,edit_diversity,\
         embed_diversity_across,edit_diversity_across,tokens_per_s,mean_length,finished,prompts,samples\n",
    );
    for r in rows {
        let p = &r.report;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.family.name(),
            r.param,
            p.quality,
            p.adherence,
            p.validity,
            p.embed_diversity,
            p.edit_diversity,
            p.embed_diversity_across,
            p.edit_diversity_across,
            p.tokens_per_s,
            p.mean_length,
            p.finished,
            p.prompts,
            p.samples
        );
    }
    s
}

impl Summary {
    /// The tables and findings as markdown (what `docs/results.md` takes).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let betas: Vec<String> = self.runs.iter().map(|r| r.beta.to_string()).collect();
        let _ = writeln!(
            s,
            "{} held-out test prompts × {} samples, seed {}, the same for every row; base model `{}`; \
             β runs {}{}.\n",
            self.prompts,
            self.samples,
            self.seed,
            self.base.display(),
            betas.join(", "),
            match &self.most_diverse {
                Some(r) => format!(
                    "; the diverse end of LERP is β = {} (the most diverse student)",
                    r.beta
                ),
                None => String::new(),
            }
        );
        for png in &self.plots {
            let name = png
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into());
            let alt = match name.as_str() {
                "front.png" => "Quality against diversity, each family a line",
                "lerp.png" => {
                    "Quality and diversity against λ, and the straight lines between the ends"
                }
                _ => "KL, held-out quality and diversity against the learner step",
            };
            let _ = writeln!(s, "![{alt}]({name})\n");
        }
        s.push_str(
            "| family | parameter | quality | adherence | bar validity | embedding diversity | edit diversity | tokens/s |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let p = &r.report;
            let _ = writeln!(
                s,
                "| {} | {} | {:.4} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} |",
                r.family.describe(),
                r.family.param_text(r.param),
                p.quality,
                p.adherence,
                p.validity,
                p.embed_diversity,
                p.edit_diversity,
                p.tokens_per_s
            );
        }
        let _ = writeln!(
            s,
            "\nHypervolume of each family's points in (quality, embedding diversity) against the \
             reference point (quality {}, diversity {}):\n\n| family | points | hypervolume |\n|---|---|---|",
            self.reference.quality, self.reference.diversity
        );
        for f in &self.fronts {
            let _ = writeln!(
                s,
                "| {} | {} | {:.4} |",
                f.family.describe(),
                f.points,
                f.hypervolume
            );
        }
        match &self.best_cfg {
            Some(b) => {
                let _ = write!(
                    s,
                    "\nBest CFG point: {} (quality {:.4}, embedding diversity {:.3}). ",
                    Family::Cfg.param_text(b.param),
                    b.quality,
                    b.embed_diversity
                );
                if self.dominating_best_cfg.is_empty() {
                    s.push_str("No other point dominates it.\n");
                } else {
                    let names: Vec<String> = self
                        .dominating_best_cfg
                        .iter()
                        .map(|n| format!("{} {}", n.family.name(), n.family.param_text(n.param)))
                        .collect();
                    let lerp = self
                        .dominating_best_cfg
                        .iter()
                        .filter(|n| matches!(n.family, Family::Lerp | Family::LerpBase))
                        .count();
                    let _ = writeln!(
                        s,
                        "Points that dominate it ({lerp} of them LERP): {}.",
                        names.join(", ")
                    );
                }
            }
            None => s.push_str("\nNo CFG point was evaluated.\n"),
        }
        for c in &self.chords {
            let _ = writeln!(
                s,
                "\n{}: quality above the straight line between its ends at {} of {} interior λ \
                 (largest gain {:+.4}); embedding diversity above it at {} of {} (largest gain {:+.3}).",
                c.family.describe(),
                c.quality_above,
                c.interior,
                c.max_quality_gain,
                c.diversity_above,
                c.interior,
                c.max_diversity_gain
            );
        }
        s
    }
}

/// A moving average over `w` points (fewer at the start).
fn smooth(v: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    (0..v.len())
        .map(|i| {
            let lo = (i + 1).saturating_sub(w);
            let ys = &v[lo..=i];
            (
                v[i].0,
                ys.iter().map(|p| p.1).sum::<f64>() / ys.len() as f64,
            )
        })
        .collect()
}

/// The JSON lines of a log that parse (a line being written may not yet).
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Per run: KL per token by step (`train.jsonl`), and held-out quality and embedding
/// diversity by step (`eval.jsonl`).
fn training_panels(runs: &[RunInfo]) -> Option<Vec<plot::Panel>> {
    let mut kl = Vec::new();
    let mut quality = Vec::new();
    let mut diversity = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let color = plot::color(i);
        let label = format!("β = {}", run.beta);
        let get = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let mut k: Vec<(f64, f64)> = json_lines(&run.dir.join("train.jsonl"))
            .iter()
            .filter_map(|v| Some((get(v, "step")?, get(v, "kl")?)))
            .collect();
        k.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut e: Vec<(f64, f64, f64)> = json_lines(&run.dir.join("eval.jsonl"))
            .iter()
            .filter_map(|v| {
                let r = v.get("report")?;
                Some((
                    get(v, "step")?,
                    get(r, "quality")?,
                    get(r, "embed_diversity")?,
                ))
            })
            .collect();
        e.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !k.is_empty() {
            kl.push(plot::Series::line(&label, color, smooth(&k, 10)));
        }
        if !e.is_empty() {
            quality.push(
                plot::Series::line(&label, color, e.iter().map(|x| (x.0, x.1)).collect()).markers(),
            );
            diversity.push(
                plot::Series::line(&label, color, e.iter().map(|x| (x.0, x.2)).collect()).markers(),
            );
        }
    }
    if kl.is_empty() && quality.is_empty() {
        return None;
    }
    Some(vec![
        plot::Panel::new(
            "KL(student ‖ teacher) per token, mean of 10 steps",
            "learner step",
            "KL per token",
            kl,
        ),
        plot::Panel::new("held-out quality", "learner step", "quality", quality),
        plot::Panel::new(
            "held-out embedding diversity",
            "learner step",
            "embedding diversity",
            diversity,
        ),
    ])
}

/// A family as a line through its points in parameter order; `ends`: its first and last
/// points are labelled with their parameter.
fn family_series(
    rows: &[Row],
    f: Family,
    y: fn(&EvalReport) -> f64,
    x: fn(&Row) -> f64,
    ends: bool,
) -> Option<plot::Series> {
    let mut pts: Vec<&Row> = rows.iter().filter(|r| r.family == f).collect();
    pts.sort_by(|a, b| a.param.total_cmp(&b.param));
    let color = plot::color(Family::ALL.iter().position(|g| *g == f).unwrap_or(0));
    let at = |r: &Row| (x(r), y(&r.report));
    let mut line =
        plot::Series::line(f.describe(), color, pts.iter().map(|r| at(r)).collect()).markers();
    if ends && pts.len() > 1 {
        for r in [pts[0], pts[pts.len() - 1]] {
            line = line.note(at(r), f.param_text(r.param));
        }
    }
    (!pts.is_empty()).then_some(line)
}

/// Draws the figures into `out`; the PNGs written.
fn write_plots(out: &Path, s: &Summary) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let samples = format!("{} prompts × {} samples", s.prompts, s.samples);

    // Quality against diversity, each family a line (the paper's Figures 1 and 3).
    let quality = |r: &Row| r.report.quality;
    let panels = [
        (
            "embedding diversity",
            (|r: &EvalReport| r.embed_diversity) as fn(&EvalReport) -> f64,
        ),
        ("edit diversity", |r: &EvalReport| r.edit_diversity),
    ]
    .into_iter()
    .map(|(name, y)| {
        let series = Family::ALL
            .iter()
            .filter_map(|f| {
                // LERP's ends are the β models' and the base model's points: named already.
                let ends = !matches!(f, Family::Lerp | Family::LerpBase);
                family_series(&s.rows, *f, y, quality, ends)
            })
            .collect();
        plot::Panel::new(&format!("quality against {name}"), "quality", name, series)
    })
    .collect::<Vec<_>>();
    plot::write(
        &out.join("front"),
        &format!("Operating points ({samples})"),
        &panels,
    )?;
    written.push(out.join("front.png"));

    // Quality and diversity against λ, with the straight line between the ends (Figure 4).
    let lerps = [Family::Lerp, Family::LerpBase];
    if s.rows.iter().any(|r| lerps.contains(&r.family)) {
        let lambda = |r: &Row| r.param;
        let panels = [
            (
                "quality",
                (|r: &EvalReport| r.quality) as fn(&EvalReport) -> f64,
            ),
            ("embedding diversity", |r: &EvalReport| r.embed_diversity),
        ]
        .into_iter()
        .map(|(name, y)| {
            let mut series = Vec::new();
            for f in lerps {
                if let Some(line) = family_series(&s.rows, f, y, lambda, false) {
                    let ends: Vec<(f64, f64)> = line
                        .points
                        .iter()
                        .copied()
                        .filter(|p| p.0 == 0.0 || p.0 == 1.0)
                        .collect();
                    if ends.len() == 2 {
                        series.push(plot::Series::line("", line.color, ends).dashed());
                    }
                    series.push(line);
                }
            }
            plot::Panel::new(&format!("{name} against λ"), "λ", name, series)
        })
        .collect::<Vec<_>>();
        plot::write(
            &out.join("lerp"),
            &format!(
                "Weight interpolation; dashed: the straight line between the ends ({samples})"
            ),
            &panels,
        )?;
        written.push(out.join("lerp.png"));
    }

    // KL, quality and diversity against the training step (Figure 2).
    match training_panels(&s.runs) {
        Some(panels) => {
            plot::write(
                &out.join("training"),
                "Training runs of the β sweep",
                &panels,
            )?;
            written.push(out.join("training.png"));
        }
        None => {
            tracing::warn!("no train.jsonl or eval.jsonl in the runs: training.png not written")
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn row(family: Family, param: f64, quality: f64, diversity: f64) -> Row {
        Row {
            family,
            param,
            report: EvalReport {
                prompts: 2,
                samples: 4,
                quality,
                adherence: 0.5,
                validity: 0.5,
                quality_of_real_tunes: 0.5,
                embed_diversity: diversity,
                edit_diversity: diversity,
                embed_diversity_across: 0.9,
                edit_diversity_across: 0.9,
                tokens_per_s: 100.0,
                mean_length: 10.0,
                finished: 1.0,
            },
        }
    }

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

    #[test]
    fn fingerprints_follow_the_weights_not_their_order_or_source() {
        tch::manual_seed(0);
        let c = model::config::Preset::Tiny.config(40);
        let a = vec![
            (
                "x".to_string(),
                Tensor::randn([3, 2], (Kind::Float, Device::Cpu)),
            ),
            (
                "y".to_string(),
                Tensor::randn([4], (Kind::Float, Device::Cpu)),
            ),
        ];
        let reversed: Vec<(String, Tensor)> =
            a.iter().rev().map(|(n, t)| (n.clone(), t.copy())).collect();
        let fa = weights_fingerprint(&c, &a).unwrap();
        assert_eq!(fa, weights_fingerprint(&c, &reversed).unwrap());
        let changed: Vec<(String, Tensor)> = a.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        let _ = changed[1].1.get(2).fill_(7.0);
        assert_ne!(fa, weights_fingerprint(&c, &changed).unwrap());
        let mut other = c.clone();
        other.d_ff += 1;
        assert_ne!(fa, weights_fingerprint(&other, &a).unwrap());
        // The key also covers the sampling.
        let s = SamplingConfig::default();
        let g = SamplingConfig {
            cfg_gamma: Some(3.0),
            ..SamplingConfig::default()
        };
        assert_eq!(point_key("c", &fa, &s), point_key("c", &fa, &s));
        assert_ne!(point_key("c", &fa, &s), point_key("c", &fa, &g));
        assert_ne!(point_key("c", &fa, &s), point_key("d", &fa, &s));
    }

    #[test]
    fn lerp_against_its_straight_line() {
        let rows = vec![
            row(Family::Lerp, 0.0, 0.2, 0.4),
            row(Family::Lerp, 0.5, 0.25, 0.45),
            row(Family::Lerp, 0.75, 0.1, 0.6),
            row(Family::Lerp, 1.0, 0.1, 0.6),
            row(Family::Cfg, 1.0, 0.9, 0.9),
        ];
        let c = chord(Family::Lerp, &rows).unwrap();
        assert_eq!((c.interior, c.quality_above, c.diversity_above), (2, 1, 1));
        // λ = 0.5: the line is at quality 0.15, diversity 0.5.
        assert!((c.max_quality_gain - 0.1).abs() < 1e-12);
        assert!((c.max_diversity_gain - 0.05).abs() < 1e-12);
        assert!(chord(Family::LerpBase, &rows).is_none());
    }

    #[test]
    fn summary_names_what_dominates_the_best_cfg_point() {
        let cfg = SweepConfig {
            runs: vec![],
            base: PathBuf::from("base.safetensors"),
            out: PathBuf::new(),
            prompts: 2,
            samples: 4,
            seed: 0,
            batch: 8,
            max_new_tokens: 16,
            gammas: vec![],
            temperatures: vec![],
            lambdas: vec![],
            device: Device::Cpu,
            progress: false,
        };
        let rows = vec![
            row(Family::Cfg, 1.0, 0.2, 0.5),
            row(Family::Cfg, 3.0, 0.3, 0.4),
            row(Family::Lerp, 0.0, 0.3, 0.4),
            row(Family::Lerp, 0.5, 0.35, 0.45),
            row(Family::Lerp, 1.0, 0.1, 0.7),
        ];
        let s = summarize(&cfg, vec![], None, rows, 3, 2);
        let best = s.best_cfg.as_ref().unwrap();
        assert_eq!((best.family, best.param), (Family::Cfg, 3.0));
        // LERP λ = 0 equals the best CFG point: equal is not dominating.
        let dom: Vec<f64> = s.dominating_best_cfg.iter().map(|n| n.param).collect();
        assert_eq!(dom, [0.5]);
        let hv: Vec<(Family, f64)> = s.fronts.iter().map(|f| (f.family, f.hypervolume)).collect();
        assert_eq!(hv[0].0, Family::Cfg);
        assert!((hv[0].1 - (0.3 * 0.4 + 0.2 * 0.1)).abs() < 1e-12);
        let md = s.markdown();
        assert!(md.contains("Best CFG point: γ = 3"), "{md}");
        assert!(md.contains("lerp λ = 0.5"), "{md}");
    }
}
