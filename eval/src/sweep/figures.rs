//! The sweep's figures: quality against diversity for every family (`front.png`), LERP
//! against λ (`lerp.png`) and the runs' training curves (`training.png`).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::evaluate::EvalReport;

use super::{Family, Row, RunInfo, Summary};
use crate::plot;

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
        let repeated = runs.iter().filter(|r| r.beta == run.beta).count() > 1;
        let label = if repeated {
            format!("β = {} seed {}", run.beta, run.seed)
        } else {
            format!("β = {}", run.beta)
        };
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

/// A family as a line through its points in parameter order (the runs of one β: their
/// mean); `ends`: its first and last points are labelled with their parameter.
fn family_series(
    rows: &[Row],
    f: Family,
    y: fn(&EvalReport) -> f64,
    x: fn(&Row) -> f64,
    ends: bool,
) -> Option<plot::Series> {
    let mut rows: Vec<&Row> = rows.iter().filter(|r| r.family == f).collect();
    rows.sort_by(|a, b| a.param.total_cmp(&b.param));
    let mut pts: Vec<(f64, (f64, f64))> = Vec::new();
    for group in rows.chunk_by(|a, b| a.param == b.param) {
        let n = group.len() as f64;
        let mean = |g: &dyn Fn(&Row) -> f64| group.iter().map(|r| g(r)).sum::<f64>() / n;
        pts.push((group[0].param, (mean(&x), mean(&|r| y(&r.report)))));
    }
    let color = plot::color(Family::ALL.iter().position(|g| *g == f).unwrap_or(0));
    let mut line =
        plot::Series::line(f.describe(), color, pts.iter().map(|p| p.1).collect()).markers();
    if ends && pts.len() > 1 {
        for (param, at) in [pts[0], pts[pts.len() - 1]] {
            line = line.note(at, f.param_text(param));
        }
    }
    (!pts.is_empty()).then_some(line)
}

/// Draws the figures into `out`; the PNGs written.
pub(super) fn write_plots(out: &Path, s: &Summary) -> Result<Vec<PathBuf>> {
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
