//! How sure a number is: 95% intervals by the percentile bootstrap over prompts (paired
//! when two operating points share their prompts and seeds, so that the prompts' own
//! difficulty cancels), and Student's t interval over repeated training runs.
//!
//! Resampling is seeded: the same values give the same interval on every machine.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 2000;

/// The seed of every bootstrap (intervals are a function of the values alone).
const SEED: u64 = 0x5EED_B007;

/// A 95% interval: `lo ≤ hi`, or both NaN when there is nothing to resample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    #[serde(deserialize_with = "nan_if_null")]
    pub lo: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub hi: f64,
}

/// Reads a number JSON wrote as `null` (a NaN: a mean of nothing) back as NaN.
pub fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// [`nan_if_null`] for each number of a list.
pub fn nans_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|x| x.unwrap_or(f64::NAN))
        .collect())
}

impl Interval {
    pub const NAN: Interval = Interval {
        lo: f64::NAN,
        hi: f64::NAN,
    };

    /// The interval lies entirely above zero or entirely below it.
    pub fn excludes_zero(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }

    /// `[lo, hi]` with `digits` decimals.
    pub fn text(&self, digits: usize) -> String {
        format!("[{:.*}, {:.*}]", digits, self.lo, digits, self.hi)
    }
}

/// A difference between two operating points, `b − a`, with its paired interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub estimate: f64,
    pub interval: Interval,
}

impl Difference {
    /// `+0.0123 [+0.0040, +0.0210]`.
    pub fn text(&self, digits: usize) -> String {
        format!(
            "{:+.*} [{:+.*}, {:+.*}]",
            digits, self.estimate, digits, self.interval.lo, digits, self.interval.hi
        )
    }
}

/// The mean (NaN when empty; a NaN value makes it NaN).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// The 2.5% and 97.5% quantiles of `stat` over [`RESAMPLES`] resamples (with
/// replacement) of the `n` units: `stat` receives the drawn unit indices.
pub fn bootstrap(n: usize, mut stat: impl FnMut(&[usize]) -> f64) -> Interval {
    if n == 0 {
        return Interval::NAN;
    }
    let mut rng = StdRng::seed_from_u64(SEED ^ n as u64);
    let mut draws = vec![0usize; n];
    let mut stats: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            for d in draws.iter_mut() {
                *d = rng.gen_range(0..n);
            }
            stat(&draws)
        })
        .filter(|s| s.is_finite())
        .collect();
    quantiles(&mut stats)
}

/// The 2.5% and 97.5% quantiles of the finite resampled statistics (NaN when fewer than
/// half of the resamples gave one).
fn quantiles(stats: &mut [f64]) -> Interval {
    if stats.len() < RESAMPLES / 2 {
        return Interval::NAN;
    }
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((stats.len() - 1) as f64 * q).round() as usize];
    Interval {
        lo: at(0.025),
        hi: at(0.975),
    }
}

/// [`bootstrap`] over two levels, for effects measured on several training runs: each
/// resample draws `runs` run indices with replacement, then `n` prompts with replacement
/// (the same prompts for every run), and `stat` receives both. With one run it is the
/// bootstrap over prompts; with several its interval holds the spread of training too.
pub fn bootstrap_runs(
    runs: usize,
    n: usize,
    mut stat: impl FnMut(&[usize], &[usize]) -> f64,
) -> Interval {
    if runs == 0 || n == 0 {
        return Interval::NAN;
    }
    let mut rng = StdRng::seed_from_u64(SEED ^ ((runs as u64) << 32) ^ n as u64);
    let mut run_draws = vec![0usize; runs];
    let mut draws = vec![0usize; n];
    let mut stats: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            for r in run_draws.iter_mut() {
                *r = rng.gen_range(0..runs);
            }
            for d in draws.iter_mut() {
                *d = rng.gen_range(0..n);
            }
            stat(&run_draws, &draws)
        })
        .filter(|s| s.is_finite())
        .collect();
    quantiles(&mut stats)
}

/// The interval of the mean of per-prompt values.
pub fn mean_interval(values: &[f64]) -> Interval {
    bootstrap(values.len(), |idx| {
        mean(&idx.iter().map(|&i| values[i]).collect::<Vec<_>>())
    })
}

/// `mean(b) − mean(a)` for per-prompt values of the same prompts (and seeds), with the
/// paired interval: prompts are resampled together on both sides.
pub fn paired_difference(a: &[f64], b: &[f64]) -> Difference {
    let n = a.len().min(b.len());
    let diff = |idx: &mut dyn Iterator<Item = usize>| {
        let d: Vec<f64> = idx.map(|i| b[i] - a[i]).collect();
        mean(&d)
    };
    Difference {
        estimate: diff(&mut (0..n)),
        interval: bootstrap(n, |idx| diff(&mut idx.iter().copied())),
    }
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom.
fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        d if d <= TABLE.len() => TABLE[d - 1],
        _ => 1.960,
    }
}

/// The 95% t interval of the mean of independent repeats (training runs with different
/// seeds): `mean ± t(n−1) · sd / √n`; NaN for fewer than two repeats.
pub fn t_interval(values: &[f64]) -> Interval {
    let n = values.len();
    if n < 2 || values.iter().any(|v| !v.is_finite()) {
        return Interval::NAN;
    }
    let m = values.iter().sum::<f64>() / n as f64;
    let var = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1) as f64;
    let half = t975(n - 1) * (var / n as f64).sqrt();
    Interval {
        lo: m - half,
        hi: m + half,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_has_a_point_interval() {
        let i = mean_interval(&[0.25; 40]);
        assert_eq!((i.lo, i.hi), (0.25, 0.25));
        assert!(mean_interval(&[]).lo.is_nan());
    }

    #[test]
    fn the_mean_interval_matches_the_normal_approximation() {
        // 400 values of a known spread: the bootstrap's interval of the mean is close to
        // mean ± 1.96 · sd / √n.
        let mut rng = StdRng::seed_from_u64(7);
        let v: Vec<f64> = (0..400).map(|_| rng.gen_range(0.0..1.0)).collect();
        let m = mean(&v);
        let sd = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 399.0).sqrt();
        let half = 1.96 * sd / 20.0;
        let i = mean_interval(&v);
        assert!(i.lo < m && m < i.hi);
        assert!(
            ((i.hi - i.lo) / 2.0 - half).abs() < 0.15 * half,
            "{i:?} vs ±{half}"
        );
        // Deterministic.
        assert_eq!(mean_interval(&v), i);
    }

    #[test]
    fn the_bootstrap_covers_the_true_mean_about_95_times_in_100() {
        // 400 seeded samples of 50 prompts from a normal distribution of mean 0.3 (Box–
        // Muller): the percentile interval holds the mean in 92–97% of them.
        let mut rng = StdRng::seed_from_u64(11);
        let mut normal = || {
            let (u, v): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen_range(0.0..1.0));
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        };
        let trials = 400;
        let covered = (0..trials)
            .filter(|_| {
                let v: Vec<f64> = (0..50).map(|_| 0.3 + 0.2 * normal()).collect();
                let i = mean_interval(&v);
                i.lo <= 0.3 && 0.3 <= i.hi
            })
            .count();
        let share = covered as f64 / trials as f64;
        assert!((0.92..=0.97).contains(&share), "coverage {share}");
    }

    #[test]
    fn resampling_runs_adds_the_spread_of_training() {
        // Three runs whose per-prompt values differ by a run offset (0, 0.1, 0.2) on top of
        // the same prompts: over prompts alone the mean over runs is sure to ±0.01; with
        // the runs resampled its interval spans most of the offsets' spread.
        let mut rng = StdRng::seed_from_u64(5);
        let prompts: Vec<f64> = (0..200).map(|_| rng.gen_range(0.0..0.1)).collect();
        let runs: Vec<Vec<f64>> = (0..3)
            .map(|r| prompts.iter().map(|p| p + 0.1 * r as f64).collect())
            .collect();
        let stat = |rs: &[usize], idx: &[usize]| {
            mean(
                &rs.iter()
                    .map(|&r| mean(&idx.iter().map(|&i| runs[r][i]).collect::<Vec<_>>()))
                    .collect::<Vec<_>>(),
            )
        };
        let over_prompts = bootstrap(200, |idx| stat(&[0, 1, 2], idx));
        let over_both = bootstrap_runs(3, 200, stat);
        assert!(over_prompts.hi - over_prompts.lo < 0.02, "{over_prompts:?}");
        assert!(over_both.hi - over_both.lo > 0.1, "{over_both:?}");
        assert!(over_both.lo < 0.15 && 0.15 < over_both.hi);
        // One run: the bootstrap over prompts (its own draws).
        let one = bootstrap_runs(1, 200, |_, idx| stat(&[0], idx));
        assert!(
            one.hi - one.lo < 0.02 && one.lo < 0.05 && 0.05 < one.hi,
            "{one:?}"
        );
        assert!(bootstrap_runs(0, 200, stat).lo.is_nan());
    }

    #[test]
    fn pairing_removes_the_prompts_own_spread() {
        // Prompts differ a lot; b is a + 0.01 with a little noise: the paired interval
        // of the difference excludes zero, the two separate intervals overlap.
        let mut rng = StdRng::seed_from_u64(3);
        let a: Vec<f64> = (0..200).map(|_| rng.gen_range(0.0..1.0)).collect();
        let b: Vec<f64> = a
            .iter()
            .map(|x| x + 0.01 + rng.gen_range(-0.005..0.005))
            .collect();
        let d = paired_difference(&a, &b);
        assert!((d.estimate - 0.01).abs() < 0.002, "{d:?}");
        assert!(d.interval.excludes_zero() && d.interval.lo > 0.0, "{d:?}");
        assert!(mean_interval(&b).lo < mean_interval(&a).hi);
        // Against itself: exactly zero.
        let z = paired_difference(&a, &a);
        assert_eq!((z.estimate, z.interval.lo, z.interval.hi), (0.0, 0.0, 0.0));
        assert!(!z.interval.excludes_zero());
    }

    #[test]
    fn t_interval_of_three_runs() {
        // mean 2, sd 1, n 3: 2 ± 4.303 / √3.
        let i = t_interval(&[1.0, 2.0, 3.0]);
        let half = 4.303 / 3f64.sqrt();
        assert!((i.lo - (2.0 - half)).abs() < 1e-12 && (i.hi - (2.0 + half)).abs() < 1e-12);
        assert!(t_interval(&[1.0]).lo.is_nan());
        assert!(t_interval(&[1.0, f64::NAN]).lo.is_nan());
    }

    /// JSON writes NaN as `null`; a report read back (the sweep's cache) has it as NaN.
    #[test]
    fn nan_survives_json() {
        let text = serde_json::to_string(&Interval::NAN).unwrap();
        assert_eq!(text, r#"{"lo":null,"hi":null}"#);
        let back: Interval = serde_json::from_str(&text).unwrap();
        assert!(back.lo.is_nan() && back.hi.is_nan());
    }

    #[test]
    fn texts() {
        let d = Difference {
            estimate: 0.0123,
            interval: Interval {
                lo: 0.004,
                hi: -0.5,
            },
        };
        assert_eq!(d.text(3), "+0.012 [+0.004, -0.500]");
        assert_eq!(Interval { lo: 0.1, hi: 0.25 }.text(2), "[0.10, 0.25]");
    }
}
