//! What a sweep found: each family's hypervolume, the best CFG point and what dominates
//! it, LERP against the straight line between its ends; as JSON, CSV and markdown.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::evaluate::EvalReport;
use crate::front::{dominates, hypervolume, Point};

use super::{Family, Row, RunInfo, SweepConfig};

/// The reference point of every hypervolume: quality 0, embedding diversity 0 (both
/// metrics are non-negative, so every point counts).
pub const REFERENCE: Point = Point {
    quality: 0.0,
    diversity: 0.0,
};

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

/// Fronts, the best CFG point, what dominates it, and LERP against its chord.
pub(super) fn summarize(
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

pub(super) fn csv(rows: &[Row]) -> String {
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
            "| family | parameter | quality | adherence | validity | embedding diversity | edit diversity | tokens/s |\n\
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use tch::Device;

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
