//! The distillation divergences of `learner::loss::divergence` against values computed by
//! hand in plain `f64` arithmetic, on small asymmetric distributions, so that swapping the
//! student and the teacher (or `α` and `1 − α` in the JSD) changes the expected value.
//!
//! With `s` the student's and `t` the teacher's probabilities (the function takes their
//! logarithms, student first), per row:
//!
//! * reverse KL: `KL(s‖t) = Σ_i s_i·ln(s_i/t_i)`;
//! * forward KL: `KL(t‖s) = Σ_i t_i·ln(t_i/s_i)`;
//! * generalised JSD with weight `α` on the student: the mixture `m = α·s + (1 − α)·t` and
//!   `JSD_α(s, t) = α·KL(s‖m) + (1 − α)·KL(t‖m)` (so `JSD_α(s, t) = JSD_{1−α}(t, s)`, and
//!   only at `α = 0.5` is it symmetric).

#![allow(clippy::unwrap_used)]

use common::settings::Divergence;
use learner::loss::divergence;
use tch::{Kind, Tensor};

/// Rows of (student, teacher) probabilities: asymmetric, and different from row to row.
const ROWS: [([f64; 4], [f64; 4]); 3] = [
    ([0.6, 0.25, 0.1, 0.05], [0.1, 0.2, 0.3, 0.4]),
    ([0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]),
    ([0.05, 0.05, 0.8, 0.1], [0.3, 0.3, 0.35, 0.05]),
];

fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(p, q)| p * (p / q).ln()).sum()
}

fn jsd(s: &[f64], t: &[f64], alpha: f64) -> f64 {
    let m: Vec<f64> = s
        .iter()
        .zip(t)
        .map(|(s, t)| alpha * s + (1.0 - alpha) * t)
        .collect();
    alpha * kl(s, &m) + (1.0 - alpha) * kl(t, &m)
}

/// The `[3, 4]` log-probabilities of the students or of the teachers.
fn logs(student: bool) -> Tensor {
    let flat: Vec<f32> = ROWS
        .iter()
        .flat_map(|(s, t)| if student { *s } else { *t })
        .map(|p| p.ln() as f32)
        .collect();
    Tensor::from_slice(&flat).view([3, 4])
}

fn computed(d: Divergence, alpha: f64) -> Vec<f64> {
    let out = divergence(&logs(true), &logs(false), d, alpha);
    assert_eq!(out.size(), [3], "one value per row");
    Vec::<f64>::try_from(out.to_kind(Kind::Double)).unwrap()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() < 1e-5,
            "{what}: computed {got:?}, by hand {want:?}"
        );
    }
}

/// The expected values are far enough apart that a swapped implementation cannot match.
fn assert_apart(what: &str, a: &[f64], b: &[f64]) {
    assert!(
        a.iter().zip(b).any(|(a, b)| (a - b).abs() > 1e-2),
        "{what}: the fixture does not tell {a:?} from {b:?}"
    );
}

#[test]
fn reverse_kl_is_kl_of_the_student_from_the_teacher() {
    let want: Vec<f64> = ROWS.iter().map(|(s, t)| kl(s, t)).collect();
    let swapped: Vec<f64> = ROWS.iter().map(|(s, t)| kl(t, s)).collect();
    assert_apart("reverse vs forward", &want, &swapped);
    // The JSD's α is ignored by the KLs.
    for alpha in [0.1, 0.5] {
        assert_close("reverse KL", &computed(Divergence::ReverseKl, alpha), &want);
    }
}

#[test]
fn forward_kl_is_kl_of_the_teacher_from_the_student() {
    let want: Vec<f64> = ROWS.iter().map(|(s, t)| kl(t, s)).collect();
    for alpha in [0.1, 0.5] {
        assert_close("forward KL", &computed(Divergence::ForwardKl, alpha), &want);
    }
}

#[test]
fn generalised_jsd_weighs_the_student_by_alpha() {
    for alpha in [0.1, 0.3, 0.5, 0.9] {
        let want: Vec<f64> = ROWS.iter().map(|(s, t)| jsd(s, t, alpha)).collect();
        if alpha != 0.5 {
            // α ↔ 1 − α (equivalently student ↔ teacher), in the mixture only, in the
            // weights only, or in both, gives another value.
            let both: Vec<f64> = ROWS.iter().map(|(s, t)| jsd(s, t, 1.0 - alpha)).collect();
            let weights_only: Vec<f64> = ROWS
                .iter()
                .map(|(s, t)| {
                    let m: Vec<f64> = s
                        .iter()
                        .zip(t)
                        .map(|(s, t)| alpha * s + (1.0 - alpha) * t)
                        .collect();
                    (1.0 - alpha) * kl(s, &m) + alpha * kl(t, &m)
                })
                .collect();
            let mixture_only: Vec<f64> = ROWS
                .iter()
                .map(|(s, t)| {
                    let m: Vec<f64> = s
                        .iter()
                        .zip(t)
                        .map(|(s, t)| (1.0 - alpha) * s + alpha * t)
                        .collect();
                    alpha * kl(s, &m) + (1.0 - alpha) * kl(t, &m)
                })
                .collect();
            assert_apart(&format!("JSD({alpha}) vs α swapped"), &want, &both);
            assert_apart(&format!("JSD({alpha}) vs weights"), &want, &weights_only);
            assert_apart(&format!("JSD({alpha}) vs mixture"), &want, &mixture_only);
        }
        assert_close(
            &format!("JSD({alpha})"),
            &computed(Divergence::Jsd, alpha),
            &want,
        );
    }
}

#[test]
fn divergences_vanish_on_equal_distributions() {
    let s = logs(true);
    for (d, alpha) in [
        (Divergence::ReverseKl, 0.5),
        (Divergence::ForwardKl, 0.5),
        (Divergence::Jsd, 0.1),
        (Divergence::Jsd, 0.9),
    ] {
        let out = Vec::<f64>::try_from(divergence(&s, &s, d, alpha).to_kind(Kind::Double)).unwrap();
        assert!(out.iter().all(|x| x.abs() < 1e-6), "{d:?} {alpha}: {out:?}");
    }
}
