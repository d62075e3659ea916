//! The runs and prompts a sweep's rows share, and statistics over them: a point's mean
//! over its runs on a resample of runs and prompts, and estimates with intervals by the
//! bootstrap over runs, then prompts.

use crate::front::{hypervolume, Point};
use crate::stats::{bootstrap_runs, mean, Difference, Interval};

use super::summary::REFERENCE;
use super::{Family, Row};

/// What one bootstrap resample holds: the training runs (by seed) and the prompts it
/// drew. The full sample has every seed and every prompt once.
pub(super) struct Draw {
    pub(super) seeds: Vec<u64>,
    pub(super) prompts: Vec<usize>,
}

/// The runs and prompts the sweep's rows share, and the statistics over them: estimates
/// on the full sample, 95% intervals by resampling runs, then prompts
/// ([`bootstrap_runs`]).
pub(super) struct Sample<'a> {
    pub(super) rows: &'a [Row],
    /// Every training seed among the rows.
    seeds: Vec<u64>,
    /// Prompts every row covers.
    pub(super) n: usize,
}

impl<'a> Sample<'a> {
    pub(super) fn new(rows: &'a [Row]) -> Sample<'a> {
        let mut seeds: Vec<u64> = rows.iter().filter_map(|r| r.seed).collect();
        seeds.sort_unstable();
        seeds.dedup();
        Sample {
            rows,
            seeds,
            n: shared_prompts(rows),
        }
    }

    pub(super) fn full(&self) -> Draw {
        Draw {
            seeds: self.seeds.clone(),
            prompts: (0..self.n).collect(),
        }
    }

    pub(super) fn interval(&self, stat: impl Fn(&Draw) -> f64) -> Interval {
        let runs = self.seeds.len().max(1);
        bootstrap_runs(runs, self.n, |rs, idx| {
            let draw = Draw {
                seeds: if self.seeds.is_empty() {
                    Vec::new()
                } else {
                    rs.iter().map(|&i| self.seeds[i]).collect()
                },
                prompts: idx.to_vec(),
            };
            stat(&draw)
        })
    }

    pub(super) fn difference(&self, stat: impl Fn(&Draw) -> f64) -> Difference {
        Difference {
            estimate: if self.n > 0 {
                stat(&self.full())
            } else {
                f64::NAN
            },
            interval: self.interval(stat),
        }
    }

    /// The point of one operating point (`family`, `param`) on the draw: its rows' means
    /// over the drawn prompts, averaged over the drawn runs (a row without a seed is one
    /// model and always counts; a point none of whose runs were drawn is its runs' mean).
    pub(super) fn point(&self, family: Family, param: f64, draw: &Draw) -> Option<Point> {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.family == family && r.param == param)
            .collect();
        if rows.is_empty() {
            return None;
        }
        let picked: Vec<&Row> = draw
            .seeds
            .iter()
            .filter_map(|s| rows.iter().find(|r| r.seed == Some(*s)).copied())
            .collect();
        let chosen = if picked.is_empty() { rows } else { picked };
        let pts: Vec<Point> = chosen.iter().map(|r| resampled(r, &draw.prompts)).collect();
        Some(Point {
            quality: mean(&pts.iter().map(|p| p.quality).collect::<Vec<_>>()),
            diversity: mean(&pts.iter().map(|p| p.diversity).collect::<Vec<_>>()),
        })
    }

    /// A family's parameters, increasing.
    pub(super) fn params(&self, family: Family) -> Vec<f64> {
        let mut p: Vec<f64> = self
            .rows
            .iter()
            .filter(|r| r.family == family)
            .map(|r| r.param)
            .collect();
        p.sort_by(f64::total_cmp);
        p.dedup();
        p
    }

    /// A family's points on the draw, by parameter.
    pub(super) fn points(&self, family: Family, draw: &Draw) -> Vec<(f64, Point)> {
        self.params(family)
            .into_iter()
            .filter_map(|p| Some((p, self.point(family, p, draw)?)))
            .collect()
    }

    pub(super) fn hypervolume(&self, family: Family, draw: &Draw) -> f64 {
        let pts: Vec<Point> = self.points(family, draw).into_iter().map(|p| p.1).collect();
        hypervolume(&pts, REFERENCE)
    }
}

/// The point of `r` with its means taken over the prompts `idx` (a bootstrap resample).
fn resampled(r: &Row, idx: &[usize]) -> Point {
    let m = |v: &[f64]| mean(&idx.iter().map(|&i| v[i]).collect::<Vec<_>>());
    Point {
        quality: m(&r.report.per_prompt.quality),
        diversity: m(&r.report.per_prompt.embed_diversity),
    }
}

/// How many prompts every row's per-prompt values cover (0 when they disagree).
pub(super) fn shared_prompts(rows: &[Row]) -> usize {
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
