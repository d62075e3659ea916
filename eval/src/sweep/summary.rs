//! What a sweep found: each family's hypervolume (with its interval) and the merged
//! families' against CFG's, each β over its runs, the paired effects of the paper's
//! claims, the best CFG point and what dominates it, LERP against the straight line
//! between its ends (`summary.json`; `markdown.rs` writes it as tables).

use std::path::PathBuf;

use serde::Serialize;

use crate::evaluate::EvalReport;
use crate::front::{dominates, hypervolume, Point};
use crate::stats::{bootstrap, mean, paired_difference, t_interval, Difference, Interval};

use super::{Family, Row, RunInfo, SweepConfig, Teacher};

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
    /// 95% interval (bootstrap over prompts: every point's means recomputed on the same
    /// resampled prompts).
    pub interval: Interval,
}

/// The runs of one β: each metric's mean over the runs and its 95% t interval over them
/// (the spread of training, seed to seed).
#[derive(Clone, Debug, Serialize)]
pub struct BetaRuns {
    pub beta: f64,
    pub runs: usize,
    pub quality: f64,
    pub quality_runs: Interval,
    pub embed_diversity: f64,
    pub embed_diversity_runs: Interval,
    pub edit_diversity: f64,
    pub edit_diversity_runs: Interval,
}

/// A paired comparison of two operating points on the same prompts and seeds: `to`
/// minus `from`.
#[derive(Clone, Debug, Serialize)]
pub struct Effect {
    pub what: String,
    pub quality: Difference,
    pub embed_diversity: Difference,
}

/// One family's hypervolume minus another's, with the paired interval.
#[derive(Clone, Debug, Serialize)]
pub struct FrontDifference {
    pub family: Family,
    pub against: Family,
    pub difference: Difference,
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
    /// The teacher every run was distilled from (and the CFG family's sampling).
    pub teacher: Option<Teacher>,
    /// The diverse end of the `lerp` family.
    pub most_diverse: Option<RunInfo>,
    /// Per β, over its runs.
    pub betas: Vec<BetaRuns>,
    /// The paper's comparisons, paired over prompts.
    pub effects: Vec<Effect>,
    pub reference: Point,
    pub fronts: Vec<FamilyFront>,
    /// The merged families' hypervolumes against the CFG family's and the base model's
    /// temperature family's.
    pub front_differences: Vec<FrontDifference>,
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

/// The point of `r` with its means taken over the prompts `idx` (a bootstrap resample).
fn resampled(r: &Row, idx: &[usize]) -> Point {
    let m = |v: &[f64]| mean(&idx.iter().map(|&i| v[i]).collect::<Vec<_>>());
    Point {
        quality: m(&r.report.per_prompt.quality),
        diversity: m(&r.report.per_prompt.embed_diversity),
    }
}

/// The hypervolume of `family`'s rows with every point computed on the prompts `idx`.
fn family_hypervolume(rows: &[Row], family: Family, idx: &[usize]) -> f64 {
    let pts: Vec<Point> = rows
        .iter()
        .filter(|r| r.family == family)
        .map(|r| resampled(r, idx))
        .collect();
    hypervolume(&pts, REFERENCE)
}

/// How many prompts every row's per-prompt values cover (0 when they disagree).
fn shared_prompts(rows: &[Row]) -> usize {
    let n = rows
        .first()
        .map_or(0, |r| r.report.per_prompt.quality.len());
    let same = rows.iter().all(|r| {
        let p = &r.report.per_prompt;
        p.quality.len() == n && p.embed_diversity.len() == n
    });
    if same {
        n
    } else {
        0
    }
}

/// Per β: the mean and t interval over its runs.
fn beta_runs(rows: &[Row]) -> Vec<BetaRuns> {
    let mut betas: Vec<f64> = rows
        .iter()
        .filter(|r| r.family == Family::Beta)
        .map(|r| r.param)
        .collect();
    betas.dedup();
    betas
        .into_iter()
        .map(|beta| {
            let of: Vec<&EvalReport> = rows
                .iter()
                .filter(|r| r.family == Family::Beta && r.param == beta)
                .map(|r| &r.report)
                .collect();
            let get = |f: fn(&EvalReport) -> f64| of.iter().map(|r| f(r)).collect::<Vec<f64>>();
            let (q, d, e) = (
                get(|r| r.quality),
                get(|r| r.embed_diversity),
                get(|r| r.edit_diversity),
            );
            BetaRuns {
                beta,
                runs: of.len(),
                quality: mean(&q),
                quality_runs: t_interval(&q),
                embed_diversity: mean(&d),
                embed_diversity_runs: t_interval(&d),
                edit_diversity: mean(&e),
                edit_diversity_runs: t_interval(&e),
            }
        })
        .collect()
}

/// The paper's paired comparisons: the teacher against the unguided base model, the
/// β = 0 student against the teacher, and each β's first run against β = 0's.
fn effects(rows: &[Row], teacher: Option<Teacher>) -> Vec<Effect> {
    let find = |f: Family, p: f64| rows.iter().find(|r| r.family == f && r.param == p);
    let effect = |what: String, from: &Row, to: &Row| Effect {
        what,
        quality: paired_difference(
            &from.report.per_prompt.quality,
            &to.report.per_prompt.quality,
        ),
        embed_diversity: paired_difference(
            &from.report.per_prompt.embed_diversity,
            &to.report.per_prompt.embed_diversity,
        ),
    };
    let mut out = Vec::new();
    let base = find(Family::Cfg, 1.0);
    let guided = teacher.and_then(|t| find(Family::Cfg, t.gamma).filter(|_| t.gamma != 1.0));
    if let (Some(b), Some(t)) = (base, guided) {
        out.push(effect(
            format!("teacher (γ = {}) − unguided base", t.param),
            b,
            t,
        ));
    }
    let zero = find(Family::Beta, 0.0);
    if let (Some(t), Some(z)) = (guided, zero) {
        out.push(effect("β = 0 student − teacher".into(), t, z));
    }
    if let Some(z) = zero {
        let mut seen = vec![0.0];
        for r in rows.iter().filter(|r| r.family == Family::Beta) {
            if !seen.contains(&r.param) {
                seen.push(r.param);
                out.push(effect(format!("β = {} − β = 0", r.param), z, r));
            }
        }
    }
    out
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
    let n = shared_prompts(&rows);
    let present: Vec<Family> = Family::ALL
        .iter()
        .copied()
        .filter(|f| of(*f).next().is_some())
        .collect();
    let fronts = present
        .iter()
        .map(|&family| {
            let pts: Vec<Point> = of(family).map(Row::point).collect();
            FamilyFront {
                family,
                points: pts.len(),
                hypervolume: hypervolume(&pts, REFERENCE),
                interval: bootstrap(n, |idx| family_hypervolume(&rows, family, idx)),
            }
        })
        .collect();
    let front_differences = [Family::Lerp, Family::LerpBase]
        .into_iter()
        .flat_map(|a| [(a, Family::Cfg), (a, Family::TemperatureBase)])
        .filter(|(a, b)| present.contains(a) && present.contains(b))
        .map(|(family, against)| {
            let all: Vec<usize> = (0..n).collect();
            let diff = |idx: &[usize]| {
                family_hypervolume(&rows, family, idx) - family_hypervolume(&rows, against, idx)
            };
            FrontDifference {
                family,
                against,
                difference: Difference {
                    estimate: if n > 0 { diff(&all) } else { f64::NAN },
                    interval: bootstrap(n, diff),
                },
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
    let teacher = runs.first().map(|r| r.teacher);
    Summary {
        prompts: rows.first().map_or(cfg.prompts, |r| r.report.prompts),
        samples: cfg.samples,
        seed: cfg.seed,
        base: cfg.base.clone(),
        runs,
        teacher,
        most_diverse,
        betas: beta_runs(&rows),
        effects: effects(&rows, teacher),
        reference: REFERENCE,
        fronts,
        front_differences,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use crate::evaluate::PerPrompt;
    use tch::Device;

    fn row(family: Family, param: f64, quality: f64, diversity: f64) -> Row {
        Row {
            family,
            param,
            seed: None,
            report: EvalReport {
                split: model::task::Split::Test,
                prompts: 2,
                samples: 4,
                quality,
                adherence: 0.5,
                validity: 0.5,
                quality_of_real_tunes: 0.5,
                validity_of_real_tunes: 0.5,
                embed_diversity: diversity,
                edit_diversity: diversity,
                embed_diversity_across: 0.9,
                edit_diversity_across: 0.9,
                tokens_per_s: 100.0,
                mean_length: 10.0,
                finished: 1.0,
                intervals: PerPrompt::default().intervals(),
                per_prompt: PerPrompt {
                    quality: vec![quality; 2],
                    adherence: vec![0.5; 2],
                    validity: vec![0.5; 2],
                    embed_diversity: vec![diversity; 2],
                    edit_diversity: vec![diversity; 2],
                    external_validity: vec![],
                },
                strata: vec!["a".into(); 2],
                external_validity: None,
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
            split: model::task::Split::Test,
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
