//! Learning curves: held-out quality and validity of a training run's checkpoints against
//! their step, read from `qd eval --json` reports named `<run folder>/eval-<step>.json`,
//! one line per run folder, each point with its 95% interval (dashed, bootstrap over
//! prompts); `make curve` draws the pre-training curve with and without the metrical
//! position this way.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::evaluate::EvalReport;
use crate::plot;
use crate::stats::Interval;

/// One evaluated checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    /// The run folder's name.
    pub run: String,
    pub step: u64,
    pub quality: f64,
    pub quality_interval: Interval,
    pub validity: f64,
    pub validity_interval: Interval,
    pub embed_diversity: f64,
}

/// The evaluations of `dir` (`eval-<step>.json`), by step.
pub fn read_run(dir: &Path) -> Result<Vec<CurvePoint>> {
    let run = dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut points = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(step) = name
            .strip_prefix("eval-")
            .and_then(|s| s.strip_suffix(".json"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path)?;
        let r: EvalReport = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a `qd eval --json` report", path.display()))?;
        points.push(CurvePoint {
            run: run.clone(),
            step,
            quality: r.quality,
            quality_interval: r.intervals.quality,
            validity: r.validity,
            validity_interval: r.intervals.validity,
            embed_diversity: r.embed_diversity,
        });
    }
    if points.is_empty() {
        bail!("{} holds no eval-<step>.json report", dir.display());
    }
    points.sort_by_key(|p| p.step);
    Ok(points)
}

/// Reads every run and writes `out.png`, `out.svg` (validity and quality against the step)
/// and `out.csv`.
pub fn write_curves(runs: &[PathBuf], out: &Path, title: &str) -> Result<Vec<CurvePoint>> {
    let curves = runs
        .iter()
        .map(|d| read_run(d))
        .collect::<Result<Vec<_>>>()?;
    let panel = |name: &str, value: fn(&CurvePoint) -> (f64, Interval)| {
        let mut series = Vec::new();
        for (i, c) in curves.iter().enumerate() {
            let color = plot::color(i + 1);
            let at = |f: fn(f64, Interval) -> f64| -> Vec<(f64, f64)> {
                c.iter()
                    .map(|p| {
                        let (v, ci) = value(p);
                        (p.step as f64, f(v, ci))
                    })
                    .collect()
            };
            series.push(plot::Series::line(&c[0].run, color, at(|v, _| v)).markers());
            series.push(plot::Series::line("", color, at(|_, ci| ci.lo)).dashed());
            series.push(plot::Series::line("", color, at(|_, ci| ci.hi)).dashed());
        }
        plot::Panel::new(name, "pre-training step", name, series)
    };
    let panels = [
        panel("bar validity", |p| (p.validity, p.validity_interval)),
        panel("quality", |p| (p.quality, p.quality_interval)),
    ];
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    plot::write(out, title, &panels)?;
    let mut csv = String::from(
        "run,step,quality,quality_lo,quality_hi,validity,validity_lo,validity_hi,embed_diversity\n",
    );
    for p in curves.iter().flatten() {
        csv += &format!(
            "{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4}\n",
            p.run,
            p.step,
            p.quality,
            p.quality_interval.lo,
            p.quality_interval.hi,
            p.validity,
            p.validity_interval.lo,
            p.validity_interval.hi,
            p.embed_diversity
        );
    }
    model::fsutil::write_atomic(&out.with_extension("csv"), csv.as_bytes())?;
    Ok(curves.into_iter().flatten().collect())
}
