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
}
