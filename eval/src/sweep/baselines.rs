//! The diversity reward against its baselines: each arm (every β > 0, every merge of
//! β = 0 toward the most diverse β) against each baseline's front at the arm's own
//! diversity, and the reward's front against each baseline's over the range both cover.

use serde::Serialize;

use crate::front::{band_hypervolume, quality_at, shared_range, Point};
use crate::stats::Difference;

use super::sample::{Draw, Sample};
use super::Family;

/// The baselines the diversity reward must beat: sampling the base model or the β = 0
/// student hotter, truncating the base model's sampling, merging the β = 0 student
/// toward the base model, and distilling for fewer steps.
pub const BASELINES: [Family; 5] = [
    Family::TemperatureBase,
    Family::TemperatureBeta0,
    Family::Plausibility,
    Family::LerpBase,
    Family::DistilLess,
];

/// An arm of the diversity reward (a β > 0, or a merge of β = 0 toward the most
/// diverse β) against a baseline at the arm's own diversity.
#[derive(Clone, Debug, Serialize)]
pub struct BaselineGain {
    pub family: Family,
    pub param: f64,
    pub quality: f64,
    pub embed_diversity: f64,
    pub against: Family,
    /// The arm's quality minus the baseline's at the arm's embedding diversity (along
    /// the baseline's front, [`quality_at`]); 95% interval over runs and prompts. `None`:
    /// no point of the baseline is that diverse.
    pub gain: Option<Difference>,
}

/// The diversity reward's front (the β students and the merges toward the most diverse
/// one) against a baseline's, over the diversity range both cover.
#[derive(Clone, Debug, Serialize)]
pub struct BandDifference {
    pub against: Family,
    pub lo: f64,
    pub hi: f64,
    /// Hypervolume between diversities `lo` and `hi` ([`band_hypervolume`]), the
    /// reward's minus the baseline's; 95% interval over runs and prompts.
    pub difference: Difference,
}

/// Every arm of the reward against every baseline present, and the fronts over their
/// shared range.
pub(super) fn baselines(sample: &Sample) -> (Vec<BaselineGain>, Vec<BandDifference>) {
    let present: Vec<Family> = BASELINES
        .into_iter()
        .filter(|f| !sample.params(*f).is_empty())
        .collect();
    let full = sample.full();
    let arms: Vec<(Family, f64)> = sample
        .params(Family::Beta)
        .into_iter()
        .filter(|b| *b > 0.0)
        .map(|b| (Family::Beta, b))
        .chain(
            sample
                .params(Family::Lerp)
                .into_iter()
                .filter(|l| *l > 0.0 && *l < 1.0)
                .map(|l| (Family::Lerp, l)),
        )
        .collect();
    let only = |pts: Vec<(f64, Point)>| pts.into_iter().map(|p| p.1).collect::<Vec<Point>>();
    let mut gains = Vec::new();
    for &(family, param) in &arms {
        let Some(at) = sample.point(family, param, &full) else {
            continue;
        };
        for &against in &present {
            let reach = quality_at(&only(sample.points(against, &full)), at.diversity);
            let gain = reach.map(|_| {
                sample.difference(|d| {
                    let Some(arm) = sample.point(family, param, d) else {
                        return f64::NAN;
                    };
                    quality_at(&only(sample.points(against, d)), arm.diversity)
                        .map_or(f64::NAN, |q| arm.quality - q)
                })
            });
            gains.push(BaselineGain {
                family,
                param,
                quality: at.quality,
                embed_diversity: at.diversity,
                against,
                gain,
            });
        }
    }
    let reward = |d: &Draw| {
        let mut pts = only(sample.points(Family::Beta, d));
        pts.extend(only(sample.points(Family::Lerp, d)));
        pts
    };
    let fronts = present
        .iter()
        .filter_map(|&against| {
            let (lo, hi) = shared_range(&reward(&full), &only(sample.points(against, &full)))?;
            Some(BandDifference {
                against,
                lo,
                hi,
                difference: sample.difference(|d| {
                    band_hypervolume(&reward(d), lo, hi)
                        - band_hypervolume(&only(sample.points(against, d)), lo, hi)
                }),
            })
        })
        .collect();
    (gains, fronts)
}
