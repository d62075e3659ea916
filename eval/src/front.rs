//! Quality–diversity fronts (both higher is better): dominance, the Pareto front of a
//! set of operating points, and its hypervolume against a fixed reference point — how
//! `qd sweep` compares CFG, temperature and weight-interpolation families.

use serde::{Deserialize, Serialize};

/// One operating point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub quality: f64,
    pub diversity: f64,
}

/// `a` is at least as good on both axes and better on one.
pub fn dominates(a: Point, b: Point) -> bool {
    a.quality >= b.quality
        && a.diversity >= b.diversity
        && (a.quality > b.quality || a.diversity > b.diversity)
}

/// The points no other point dominates (NaNs dropped, duplicates kept once), by
/// quality, highest first.
pub fn pareto_front(points: &[Point]) -> Vec<Point> {
    let finite: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| p.quality.is_finite() && p.diversity.is_finite())
        .collect();
    let mut front: Vec<Point> = finite
        .iter()
        .copied()
        .filter(|p| !finite.iter().any(|q| dominates(*q, *p)))
        .collect();
    front.sort_by(|a, b| {
        b.quality
            .total_cmp(&a.quality)
            .then(b.diversity.total_cmp(&a.diversity))
    });
    front.dedup();
    front
}

/// The area dominated by `points` and bounded below by `reference` (points that do not
/// beat the reference on both axes add nothing).
pub fn hypervolume(points: &[Point], reference: Point) -> f64 {
    let beyond: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| p.quality > reference.quality && p.diversity > reference.diversity)
        .collect();
    // Sweep the front from the highest quality down: each point adds the strip of
    // diversity above what the points of higher quality already cover.
    let mut area = 0.0;
    let mut covered = reference.diversity;
    for p in pareto_front(&beyond) {
        if p.diversity > covered {
            area += (p.quality - reference.quality) * (p.diversity - covered);
            covered = p.diversity;
        }
    }
    area
}

/// The best quality `points` reach at embedding diversity `d`: on the Pareto front,
/// linear between the two front points around `d` (sampling one setting for some prompts
/// and the other for the rest reaches every mixture of their per-prompt means), the
/// least diverse front point's quality below its diversity (it dominates there), and
/// `None` beyond the most diverse point (nothing reaches `d`).
pub fn quality_at(points: &[Point], d: f64) -> Option<f64> {
    // By quality, highest first: by diversity, lowest first.
    let front = pareto_front(points);
    let first = front.first()?;
    if !d.is_finite() || d > front[front.len() - 1].diversity {
        return None;
    }
    if d <= first.diversity {
        return Some(first.quality);
    }
    let i = front.iter().position(|p| p.diversity >= d)?;
    let (a, b) = (front[i - 1], front[i]);
    let t = (d - a.diversity) / (b.diversity - a.diversity);
    Some(a.quality + t * (b.quality - a.quality))
}

/// The part of the hypervolume (reference quality 0) that lies between diversities `lo`
/// and `hi`: ∫ of the best quality at diversity ≥ x for x from `lo` to `hi` — fronts
/// compared over the range both cover, where neither gains from reaching further.
pub fn band_hypervolume(points: &[Point], lo: f64, hi: f64) -> f64 {
    let mut area = 0.0;
    let mut covered = lo;
    for p in pareto_front(points) {
        let top = p.diversity.min(hi);
        if top > covered && p.quality > 0.0 {
            area += p.quality * (top - covered);
            covered = top;
        }
    }
    area
}

/// The diversity range `[lo, hi]` both sets of points span (`None` when they do not
/// overlap).
pub fn shared_range(a: &[Point], b: &[Point]) -> Option<(f64, f64)> {
    let span = |pts: &[Point]| {
        let d = pts.iter().map(|p| p.diversity).filter(|d| d.is_finite());
        let lo = d.clone().fold(f64::INFINITY, f64::min);
        let hi = d.fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let ((alo, ahi), (blo, bhi)) = (span(a), span(b));
    let (lo, hi) = (alo.max(blo), ahi.min(bhi));
    (lo < hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(quality: f64, diversity: f64) -> Point {
        Point { quality, diversity }
    }

    #[test]
    fn hypervolume_of_hand_made_fronts() {
        let r = p(0.0, 0.0);
        assert_eq!(hypervolume(&[], r), 0.0);
        assert_eq!(hypervolume(&[p(2.0, 3.0)], r), 6.0);
        // Two points: a 3×1 strip and a 1×2 strip above it.
        assert_eq!(hypervolume(&[p(3.0, 1.0), p(1.0, 3.0)], r), 5.0);
        // Order, duplicates and dominated points change nothing.
        assert_eq!(
            hypervolume(
                &[
                    p(1.0, 3.0),
                    p(3.0, 1.0),
                    p(1.0, 3.0),
                    p(1.0, 1.0),
                    p(0.5, 2.0)
                ],
                r
            ),
            5.0
        );
        // A staircase of three.
        assert_eq!(
            hypervolume(&[p(3.0, 1.0), p(2.0, 2.0), p(1.0, 3.0)], r),
            6.0
        );
        // Against another reference; points not beyond it are ignored, NaNs too.
        assert_eq!(
            hypervolume(
                &[p(3.0, 1.0), p(1.0, 3.0), p(0.5, 5.0), p(f64::NAN, 9.0)],
                p(0.5, 0.5)
            ),
            2.5 * 0.5 + 0.5 * 2.0
        );
        assert_eq!(hypervolume(&[p(-1.0, 5.0)], r), 0.0);
    }

    #[test]
    fn fronts_and_dominance() {
        assert!(dominates(p(2.0, 2.0), p(1.0, 2.0)));
        assert!(!dominates(p(2.0, 2.0), p(2.0, 2.0)));
        assert!(!dominates(p(3.0, 1.0), p(1.0, 3.0)));
        let f = pareto_front(&[
            p(1.0, 3.0),
            p(3.0, 1.0),
            p(2.0, 2.0),
            p(1.5, 1.5),
            p(3.0, 1.0),
        ]);
        assert_eq!(f, vec![p(3.0, 1.0), p(2.0, 2.0), p(1.0, 3.0)]);
    }

    #[test]
    fn quality_at_matched_diversity() {
        // A front (3, 1), (2, 2), (1, 3) and a dominated point that changes nothing.
        let pts = [p(1.0, 3.0), p(3.0, 1.0), p(2.0, 2.0), p(0.5, 2.5)];
        assert_eq!(quality_at(&pts, 1.0), Some(3.0));
        assert_eq!(quality_at(&pts, 1.5), Some(2.5));
        assert_eq!(quality_at(&pts, 2.75), Some(1.25));
        assert_eq!(quality_at(&pts, 3.0), Some(1.0));
        // Below the least diverse point: that point dominates there.
        assert_eq!(quality_at(&pts, 0.2), Some(3.0));
        // Beyond the most diverse point: out of reach.
        assert_eq!(quality_at(&pts, 3.01), None);
        assert_eq!(quality_at(&pts, f64::NAN), None);
        assert_eq!(quality_at(&[], 1.0), None);
    }

    #[test]
    fn band_hypervolume_counts_only_the_band() {
        let pts = [p(3.0, 1.0), p(2.0, 2.0), p(1.0, 3.0)];
        // The whole front: equal to the hypervolume.
        assert_eq!(
            band_hypervolume(&pts, 0.0, 3.0),
            hypervolume(&pts, p(0.0, 0.0))
        );
        // From 1.5 to 2.5: 0.5 at quality 2, then 0.5 at quality 1.
        assert_eq!(band_hypervolume(&pts, 1.5, 2.5), 1.5);
        // Beyond the front: nothing.
        assert_eq!(band_hypervolume(&pts, 3.0, 4.0), 0.0);
        assert_eq!(
            shared_range(&pts, &[p(1.0, 2.5), p(1.0, 5.0)]),
            Some((2.5, 3.0))
        );
        assert_eq!(shared_range(&pts, &[p(1.0, 4.0)]), None);
    }
}
