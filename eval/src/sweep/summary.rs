//! What a sweep found: each family's hypervolume (with its interval) and the merged
//! families' against CFG's, each β over its runs, the paired effects of the paper's
//! claims, the best CFG point and what dominates it, LERP against the straight line
//! between its ends (`summary.json`; `markdown.rs` writes it as tables).

use std::path::PathBuf;

use serde::Serialize;

use crate::evaluate::EvalReport;
use crate::front::{dominates, Point};
use crate::stats::{mean, t_interval, Difference, Interval};
use model::task::Split;

use super::baselines::{baselines, BandDifference, BaselineGain};
use super::sample::Sample;
use super::{Family, Row, RunInfo, SweepConfig, Teacher};

/// The reference point of every hypervolume: quality 0, embedding diversity 0 (both
/// metrics are non-negative, so every point counts).
pub const REFERENCE: Point = Point {
    quality: 0.0,
    diversity: 0.0,
};

/// A family's front (each parameter's point the mean over its runs).
#[derive(Clone, Debug, Serialize)]
pub struct FamilyFront {
    pub family: Family,
    /// Parameters (operating points) in the family.
    pub points: usize,
    pub hypervolume: f64,
    /// 95% interval (bootstrap over runs, then prompts: every point's means recomputed on
    /// the same resampled runs and prompts).
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
/// minus `from`, each the mean over its runs; intervals over runs and prompts.
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

/// What `out/summary.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The held-out split the prompts come from.
    pub split: Split,
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
    /// Each arm of the diversity reward against each baseline at matched diversity.
    pub baseline_gains: Vec<BaselineGain>,
    /// The reward's front against each baseline's over the range both cover.
    pub baseline_fronts: Vec<BandDifference>,
    pub points: usize,
    pub evaluated: usize,
    pub cached: usize,
    /// The figures written (PNG; an SVG lies beside each).
    pub plots: Vec<PathBuf>,
    pub rows: Vec<Row>,
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

/// The paper's paired comparisons, over runs and prompts: the teacher against the
/// unguided base model, the β = 0 students against the teacher, and each β's runs
/// against β = 0's (run seed with run seed).
fn effects(sample: &Sample, teacher: Option<Teacher>) -> Vec<Effect> {
    let has = |f: Family, p: f64| sample.rows.iter().any(|r| r.family == f && r.param == p);
    let effect = |what: String, from: (Family, f64), to: (Family, f64)| {
        let diff = |get: fn(Point) -> f64| {
            sample.difference(|d| {
                match (sample.point(from.0, from.1, d), sample.point(to.0, to.1, d)) {
                    (Some(a), Some(b)) => get(b) - get(a),
                    _ => f64::NAN,
                }
            })
        };
        Effect {
            what,
            quality: diff(|p| p.quality),
            embed_diversity: diff(|p| p.diversity),
        }
    };
    let mut out = Vec::new();
    let guided = teacher
        .map(|t| t.gamma)
        .filter(|&g| g != 1.0 && has(Family::Cfg, g));
    if let Some(g) = guided.filter(|_| has(Family::Cfg, 1.0)) {
        out.push(effect(
            format!("teacher (γ = {g}) − unguided base"),
            (Family::Cfg, 1.0),
            (Family::Cfg, g),
        ));
    }
    if let Some(g) = guided.filter(|_| has(Family::Beta, 0.0)) {
        out.push(effect(
            "β = 0 student − teacher".into(),
            (Family::Cfg, g),
            (Family::Beta, 0.0),
        ));
    }
    if has(Family::Beta, 0.0) {
        for b in sample
            .params(Family::Beta)
            .into_iter()
            .filter(|b| *b != 0.0)
        {
            out.push(effect(
                format!("β = {b} − β = 0"),
                (Family::Beta, 0.0),
                (Family::Beta, b),
            ));
        }
    }
    out
}

/// Fronts, the best CFG point, what dominates it, LERP against its chord and the
/// reward against its baselines.
pub(super) fn summarize(
    cfg: &SweepConfig,
    runs: Vec<RunInfo>,
    most_diverse: Option<RunInfo>,
    rows: Vec<Row>,
    evaluated: usize,
    cached: usize,
) -> Summary {
    let sample = Sample::new(&rows);
    let full = sample.full();
    let present: Vec<Family> = Family::ALL
        .iter()
        .copied()
        .filter(|f| !sample.params(*f).is_empty())
        .collect();
    let fronts = present
        .iter()
        .map(|&family| FamilyFront {
            family,
            points: sample.params(family).len(),
            hypervolume: sample.hypervolume(family, &full),
            interval: sample.interval(|d| sample.hypervolume(family, d)),
        })
        .collect();
    let front_differences = [Family::Lerp, Family::LerpBase]
        .into_iter()
        .flat_map(|a| [(a, Family::Cfg), (a, Family::TemperatureBase)])
        .filter(|(a, b)| present.contains(a) && present.contains(b))
        .map(|(family, against)| FrontDifference {
            family,
            against,
            difference: sample
                .difference(|d| sample.hypervolume(family, d) - sample.hypervolume(against, d)),
        })
        .collect();
    let named = |family: Family, param: f64, p: Point| Named {
        family,
        param,
        quality: p.quality,
        embed_diversity: p.diversity,
    };
    let best_cfg = sample
        .points(Family::Cfg, &full)
        .into_iter()
        .filter(|(_, p)| p.quality.is_finite())
        .max_by(|a, b| {
            a.1.quality
                .total_cmp(&b.1.quality)
                .then(a.1.diversity.total_cmp(&b.1.diversity))
        });
    let dominating_best_cfg = best_cfg
        .map(|(_, best)| {
            present
                .iter()
                .filter(|f| **f != Family::Cfg)
                .flat_map(|&f| {
                    sample
                        .points(f, &full)
                        .into_iter()
                        .map(move |(p, pt)| (f, p, pt))
                })
                .filter(|(_, _, pt)| dominates(*pt, best))
                .map(|(f, p, pt)| named(f, p, pt))
                .collect()
        })
        .unwrap_or_default();
    let chords = [Family::Lerp, Family::LerpBase]
        .into_iter()
        .filter_map(|f| chord(f, &rows))
        .collect();
    let teacher = runs.first().map(|r| r.teacher);
    let (baseline_gains, baseline_fronts) = baselines(&sample);
    Summary {
        split: cfg.split,
        prompts: rows.first().map_or(cfg.prompts, |r| r.report.prompts),
        samples: cfg.samples,
        seed: cfg.seed,
        base: cfg.base.clone(),
        runs,
        teacher,
        most_diverse,
        betas: beta_runs(&rows),
        effects: effects(&sample, teacher),
        reference: REFERENCE,
        fronts,
        front_differences,
        best_cfg: best_cfg.map(|(p, pt)| named(Family::Cfg, p, pt)),
        dominating_best_cfg,
        chords,
        baseline_gains,
        baseline_fronts,
        points: rows.len(),
        evaluated,
        cached,
        plots: Vec::new(),
        rows,
    }
}

/// A LERP family (each λ the mean over its runs) against the straight line between its
/// λ = 0 and λ = 1 points.
pub fn chord(family: Family, rows: &[Row]) -> Option<Chord> {
    let sample = Sample::new(rows);
    let pts = sample.points(family, &sample.full());
    let end = |l: f64| pts.iter().find(|p| p.0 == l).map(|p| p.1);
    let (a, b) = (end(0.0)?, end(1.0)?);
    let interior: Vec<&(f64, Point)> = pts.iter().filter(|p| p.0 > 0.0 && p.0 < 1.0).collect();
    let gains = |f: fn(Point) -> f64| -> Vec<f64> {
        interior
            .iter()
            .map(|(l, p)| f(*p) - ((1.0 - l) * f(a) + l * f(b)))
            .collect()
    };
    let q = gains(|p| p.quality);
    let d = gains(|p| p.diversity);
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
            plausibilities: vec![],
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
