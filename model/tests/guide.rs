//! `model::sampling::guide`, the one CFG formula of the sampler and the learner's teacher,
//! against log-space values computed by hand (plain `f64`) on two rows of six ids.
//!
//! With `c` and `u` the conditional and unconditional log-probabilities and `g = u + γ·(c − u)`:
//!
//! * standard scope (no groups): the output is `g`, unnormalised;
//! * plausibility `α`: ids whose conditional probability is below `α` times the row's most
//!   likely id's get −∞ (in `g`, and in `c` for the content scope), all others are kept;
//! * content scope (group masks): an id of group `G` gets `log p_c(G) + g_i − log Σ_{j∈G} e^{g_j}`
//!   (`p_c(G)` the conditional mass of the group's plausible ids), an id in no group keeps `c_i`;
//! * `γ = 1` gives back `c` in either scope.

#![allow(clippy::unwrap_used)]

use model::sampling::guide;
use tch::Tensor;

/// Conditional probabilities, row by row. Row 0: α = 0.2 keeps ids 0–3 (threshold 0.09)
/// and excludes 4 and 5; id 3 (0.10) is kept only because the threshold is per row (row 1's
/// would be 0.12). Row 1: α = 0.2 keeps ids 2 and 4 (threshold 0.12).
const C: [[f64; 6]; 2] = [
    [0.45, 0.25, 0.13, 0.10, 0.05, 0.02],
    [0.05, 0.10, 0.60, 0.03, 0.13, 0.09],
];
/// Unconditional probabilities. Row 0's id 4 is implausible (0.05 < 0.09) but guidance
/// promotes it (γ = 2: 0.05²/0.01 = 0.25, above the plausible ids 2 and 3).
const U: [[f64; 6]; 2] = [
    [0.30, 0.10, 0.20, 0.30, 0.01, 0.09],
    [0.20, 0.20, 0.20, 0.001, 0.199, 0.20],
];
const ALPHA: f64 = 0.2;
/// Content groups (positions): {1, 2, 3} and {4, 5}; id 0 is in no group.
const GROUPS: [&[usize]; 2] = [&[1, 2, 3], &[4, 5]];

/// `[2, 6]` float log-probabilities, and the same values (after rounding) as `f64`.
fn logs(p: &[[f64; 6]; 2]) -> (Tensor, Vec<Vec<f64>>) {
    let flat: Vec<f32> = p.iter().flatten().map(|x| x.ln() as f32).collect();
    let rows = flat
        .chunks(6)
        .map(|r| r.iter().map(|&x| f64::from(x)).collect())
        .collect();
    (Tensor::from_slice(&flat).view([2, 6]), rows)
}

fn masks() -> Vec<Tensor> {
    GROUPS
        .iter()
        .map(|g| {
            let m: Vec<bool> = (0..6).map(|i| g.contains(&i)).collect();
            Tensor::from_slice(&m)
        })
        .collect()
}

fn guided(c: &[f64], u: &[f64], gamma: f64) -> Vec<f64> {
    c.iter().zip(u).map(|(c, u)| u + gamma * (c - u)).collect()
}

/// Which ids the constraint keeps: conditional probability ≥ α × the row's maximum.
fn plausible(c: &[f64], alpha: f64) -> Vec<bool> {
    let max = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    c.iter().map(|&x| x.exp() >= alpha * max.exp()).collect()
}

fn mask_out(x: &[f64], keep: &[bool]) -> Vec<f64> {
    x.iter()
        .zip(keep)
        .map(|(&v, &k)| if k { v } else { f64::NEG_INFINITY })
        .collect()
}

fn log_sum_exp(x: &[f64], ids: &[usize]) -> f64 {
    ids.iter().map(|&i| x[i].exp()).sum::<f64>().ln()
}

/// The content-scope output by hand from (possibly masked) `c` and `g`.
fn content(c: &[f64], g: &[f64]) -> Vec<f64> {
    let mut out = c.to_vec();
    for group in GROUPS {
        let (mass, norm) = (log_sum_exp(c, group), log_sum_exp(g, group));
        for &i in group {
            out[i] = if g[i] == f64::NEG_INFINITY {
                f64::NEG_INFINITY
            } else {
                mass + g[i] - norm
            };
        }
    }
    out
}

fn assert_rows(what: &str, got: &Tensor, want: &[Vec<f64>]) {
    let got = Vec::<Vec<f32>>::try_from(got).unwrap();
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
            let ok = if w == f64::NEG_INFINITY {
                g == f32::NEG_INFINITY
            } else {
                (f64::from(g) - w).abs() < 1e-5
            };
            assert!(
                ok,
                "{what}: row {r} id {i}: {g} vs {w} by hand\n{got:?}\n{want:?}"
            );
        }
    }
}

#[test]
fn the_fixture_is_what_the_comments_say() {
    let (_, c) = logs(&C);
    let (_, u) = logs(&U);
    assert_eq!(
        plausible(&c[0], ALPHA),
        [true, true, true, true, false, false]
    );
    assert_eq!(
        plausible(&c[1], ALPHA),
        [false, false, true, false, true, false]
    );
    let g = guided(&c[0], &u[0], 2.0);
    assert!(g[4] > g[2] && g[4] > g[3]);
    for row in C.iter().chain(&U) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn standard_cfg_is_u_plus_gamma_times_c_minus_u() {
    let ((ct, c), (ut, u)) = (logs(&C), logs(&U));
    for gamma in [0.0, 0.5, 2.0, 3.5] {
        let want: Vec<Vec<f64>> = (0..2).map(|r| guided(&c[r], &u[r], gamma)).collect();
        for plausibility in [None, Some(0.0)] {
            assert_rows(
                &format!("γ = {gamma}, {plausibility:?}"),
                &guide(&ct, &ut, gamma, plausibility, &[]),
                &want,
            );
        }
    }
    // γ = 0 is the unconditional, γ = 1 the conditional.
    assert_rows("γ = 0", &guide(&ct, &ut, 0.0, None, &[]), &u);
    assert_rows("γ = 1", &guide(&ct, &ut, 1.0, None, &[]), &c);
}

#[test]
fn plausibility_excludes_exactly_the_ids_below_alpha_times_the_rows_max() {
    let ((ct, c), (ut, u)) = (logs(&C), logs(&U));
    for gamma in [1.0, 2.0, 3.5] {
        let want: Vec<Vec<f64>> = (0..2)
            .map(|r| mask_out(&guided(&c[r], &u[r], gamma), &plausible(&c[r], ALPHA)))
            .collect();
        assert_rows(
            &format!("γ = {gamma}, α = {ALPHA}"),
            &guide(&ct, &ut, gamma, Some(ALPHA), &[]),
            &want,
        );
    }
    // Spelled out for row 0, γ = 2: the guided scores of ids 0–3, and −∞ for ids 4 and 5,
    // though guidance alone would have put id 4 above ids 2 and 3.
    let out = Vec::<Vec<f32>>::try_from(&guide(&ct, &ut, 2.0, Some(ALPHA), &[])).unwrap();
    let by_hand = [
        0.45f64 * 0.45 / 0.30,
        0.25 * 0.25 / 0.10,
        0.13 * 0.13 / 0.20,
        0.01 / 0.30,
    ];
    for (i, p) in by_hand.iter().enumerate() {
        assert!(
            (f64::from(out[0][i]) - p.ln()).abs() < 1e-5,
            "id {i}: {:?}",
            out[0]
        );
    }
    assert_eq!(out[0][4..], [f32::NEG_INFINITY; 2]);
}

#[test]
fn content_scope_shares_each_groups_conditional_mass_by_the_guided_scores() {
    let ((ct, c), (ut, u)) = (logs(&C), logs(&U));
    let groups = masks();
    for gamma in [0.0, 2.0, 3.5] {
        let want: Vec<Vec<f64>> = (0..2)
            .map(|r| content(&c[r], &guided(&c[r], &u[r], gamma)))
            .collect();
        let out = guide(&ct, &ut, gamma, None, &groups);
        assert_rows(&format!("content, γ = {gamma}"), &out, &want);
        // Each group keeps its conditional mass; id 0 keeps its conditional probability.
        let p = Vec::<Vec<f32>>::try_from(&out.exp()).unwrap();
        for r in 0..2 {
            for g in GROUPS {
                let (got, mass) = (
                    g.iter().map(|&i| f64::from(p[r][i])).sum::<f64>(),
                    g.iter().map(|&i| C[r][i]).sum::<f64>(),
                );
                assert!((got - mass).abs() < 1e-5, "row {r} group {g:?}");
            }
            assert!((f64::from(p[r][0]) - C[r][0]).abs() < 1e-6);
        }
    }
    // Spelled out for row 0, γ = 2, group {1, 2, 3}: mass 0.48 shared as c²/u.
    let out = Vec::<Vec<f32>>::try_from(&guide(&ct, &ut, 2.0, None, &groups).exp()).unwrap();
    let scores = [
        0.25f64 * 0.25 / 0.10,
        0.13 * 0.13 / 0.20,
        0.10 * 0.10 / 0.30,
    ];
    let total: f64 = scores.iter().sum();
    for (k, s) in scores.iter().enumerate() {
        let want = 0.48 * s / total;
        assert!(
            (f64::from(out[0][k + 1]) - want).abs() < 1e-6,
            "{:?}",
            out[0]
        );
    }
}

#[test]
fn content_scope_with_plausibility_drops_implausible_ids_and_emptied_groups() {
    let ((ct, c), (ut, u)) = (logs(&C), logs(&U));
    for gamma in [1.0, 2.0, 3.5] {
        let want: Vec<Vec<f64>> = (0..2)
            .map(|r| {
                let keep = plausible(&c[r], ALPHA);
                content(
                    &mask_out(&c[r], &keep),
                    &mask_out(&guided(&c[r], &u[r], gamma), &keep),
                )
            })
            .collect();
        // Row 0's group {4, 5} is emptied by the constraint: −∞, never NaN.
        assert!(want[0][4] == f64::NEG_INFINITY && want[0][5] == f64::NEG_INFINITY);
        assert_rows(
            &format!("content, γ = {gamma}, α = {ALPHA}"),
            &guide(&ct, &ut, gamma, Some(ALPHA), &masks()),
            &want,
        );
    }
}

#[test]
fn gamma_one_returns_the_conditional_in_both_scopes() {
    let ((ct, c), (ut, _)) = (logs(&C), logs(&U));
    assert_rows("all", &guide(&ct, &ut, 1.0, None, &[]), &c);
    assert_rows("content", &guide(&ct, &ut, 1.0, None, &masks()), &c);
}
