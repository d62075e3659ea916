//! The learner's step (`train_step`): a finite batch takes one AdamW update; a batch
//! whose loss or gradient is not finite leaves the weights and the optimizer untouched
//! and says why.

#![allow(clippy::unwrap_used)]

use tch::nn::VarStore;
use tch::{Device, Tensor};

use common::settings::{Divergence, GradClip};
use learner::loss::{Generatable, LossConfig};
use learner::queue::{sample_pairs, Pair};
use learner::step::{backward, clip, train_step, Clipping, Step};
use model::optim::{AdamW, AdamWConfig};
use model::sampling::{CfgScope, SamplingConfig};
use model::transformer::Transformer;

use testkit::{tiny, vocabulary, VOCAB};

fn pairs(m: &Transformer, reward: f32) -> Vec<Pair> {
    let cfg = SamplingConfig {
        max_new_tokens: 12,
        ..SamplingConfig::default()
    };
    let prompts = vec![vec![4, 5, 6], vec![7]];
    sample_pairs(m, prompts, &vocabulary(), &cfg, 1, 1, |_| reward).unwrap()
}

const CLIP: Clipping = Clipping {
    max: 1.0,
    scope: GradClip::Total,
};

const CFG: LossConfig = LossConfig {
    beta: 1.0,
    cfg_gamma: 3.0,
    cfg_plausibility: 0.0,
    cfg_scope: CfgScope::All,
    divergence: Divergence::ReverseKl,
    jsd_alpha: 0.5,
    rho_bar: 1.0,
};

fn weights(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut w: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// One step of a fresh student (seed 1) against a teacher (seed 2) on `pairs`; the
/// outcome, and whether the student's weights changed.
fn step(teacher_vs: &mut VarStore, teacher: &Transformer, reward: f32) -> (Step, bool, i64) {
    teacher_vs.freeze();
    let (vs, student) = tiny(1);
    let g = Generatable::new(vocabulary(), VOCAB, Device::Cpu);
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let ps = pairs(&student, reward);
    let before = weights(&vs);
    let out = train_step(&student, teacher, &mut opt, &g, &ps, 0.0, &CFG, 1e-3, CLIP).unwrap();
    let changed = weights(&vs)
        .iter()
        .zip(&before)
        .any(|((_, a), (_, b))| !a.equal(b));
    (out, changed, opt.step)
}

#[test]
fn a_finite_batch_takes_one_update() {
    let (mut tvs, teacher) = tiny(2);
    let (out, changed, steps) = step(&mut tvs, &teacher, 0.5);
    match out {
        Step::Applied { stats, grad_norm } => {
            assert!(stats.loss.is_finite() && grad_norm.total.is_finite() && grad_norm.total > 0.0);
        }
        Step::Skipped { reason } => panic!("skipped: {reason}"),
    }
    assert!(changed, "the weights did not move");
    assert_eq!(steps, 1);
}

/// The gradient of `loss` over `vs`'s trainable variables (then zeroed), flattened.
fn flat_grad(vs: &VarStore, loss: &Tensor) -> Tensor {
    loss.backward();
    let mut flat = Vec::new();
    for mut t in vs.trainable_variables() {
        let g = t.grad();
        flat.push(g.flatten(0, -1).copy());
        let _ = g.detach().zero_();
        t.zero_grad();
    }
    Tensor::cat(&flat, 0)
}

/// The gradients of `L_distill` and of `β·L_pg` over `vs`, each from a loss of its own
/// (baseline 0.2), flattened.
fn term_grads(
    vs: &VarStore,
    student: &Transformer,
    teacher: &Transformer,
    ps: &[Pair],
    cfg: &LossConfig,
) -> (Tensor, Tensor) {
    let g = Generatable::new(vocabulary(), VOCAB, Device::Cpu);
    let l = learner::loss::loss(student, teacher, ps, &g, 0.2, cfg).unwrap();
    let distill = l.total.shallow_clone() - &l.weighted_pg;
    let gd = flat_grad(vs, &distill);
    let l = learner::loss::loss(student, teacher, ps, &g, 0.2, cfg).unwrap();
    (gd, flat_grad(vs, &l.weighted_pg))
}

/// Each term's gradient norm is the norm of that term's gradient alone, taken from a
/// loss of its own; the terms add up to the step's gradient; at β = 0 the
/// policy-gradient term's is 0 and the distillation's is the whole.
#[test]
fn the_step_reports_each_terms_gradient_norm() {
    let (mut tvs, teacher) = tiny(2);
    tvs.freeze();
    let g = Generatable::new(vocabulary(), VOCAB, Device::Cpu);
    for beta in [0.0, 2.0] {
        let cfg = LossConfig { beta, ..CFG };
        let (vs, student) = tiny(1);
        let ps = pairs(&student, 0.9);
        // By hand: the two terms' gradients from separate losses.
        let (gd, gp) = term_grads(&vs, &student, &teacher, &ps, &cfg);
        let norm = |t: &Tensor| t.norm().double_value(&[]);
        let want_total = norm(&(&gd + &gp));
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        let Step::Applied { grad_norm, .. } =
            train_step(&student, &teacher, &mut opt, &g, &ps, 0.2, &cfg, 1e-3, CLIP).unwrap()
        else {
            panic!("β = {beta}: the step was skipped");
        };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.max(1e-6);
        assert!(
            close(grad_norm.distill, norm(&gd)),
            "β = {beta}: {grad_norm:?} vs {}",
            norm(&gd)
        );
        assert!(
            close(grad_norm.pg, norm(&gp)),
            "β = {beta}: {grad_norm:?} vs {}",
            norm(&gp)
        );
        assert!(
            close(grad_norm.total, want_total),
            "β = {beta}: {grad_norm:?} vs {want_total}"
        );
        if beta == 0.0 {
            assert_eq!(grad_norm.pg, 0.0);
            assert!(close(grad_norm.distill, grad_norm.total));
        } else {
            // The fixture's policy-gradient term is not negligible: the check can fail.
            assert!(grad_norm.pg > 1e-3 * grad_norm.distill, "{grad_norm:?}");
        }
    }
}

#[test]
fn a_non_finite_loss_leaves_the_weights() {
    // A teacher with a NaN weight gives NaN log-probabilities, so a NaN divergence.
    let (mut tvs, teacher) = tiny(2);
    tch::no_grad(|| {
        let mut head = tvs.variables().remove("head.weight").unwrap();
        let _ = head.fill_(f64::NAN);
    });
    let (out, changed, steps) = step(&mut tvs, &teacher, 0.5);
    assert!(
        matches!(
            out,
            Step::Skipped {
                reason: "non_finite_loss"
            }
        ),
        "{out:?}"
    );
    assert!(!changed, "a skipped step moved the weights");
    assert_eq!(steps, 0);
}

#[test]
fn a_non_finite_gradient_leaves_the_weights() {
    // A reward of 1e36 keeps the loss finite (about 1e37) but the squared gradient
    // overflows: the gradient norm is infinite.
    let (mut tvs, teacher) = tiny(2);
    let (out, changed, steps) = step(&mut tvs, &teacher, 1e36);
    assert!(
        matches!(
            out,
            Step::Skipped {
                reason: "non_finite_gradient"
            }
        ),
        "{out:?}"
    );
    assert!(!changed, "a skipped step moved the weights");
    assert_eq!(steps, 0);
}

/// Clipping per term scales each term's gradient to the bound on its own and adds them:
/// the distillation part of the update keeps its size when the policy-gradient term is
/// the larger. Clipping the total scales both by one factor.
#[test]
fn per_term_clipping_bounds_each_term_on_its_own() {
    let (mut tvs, teacher) = tiny(2);
    tvs.freeze();
    let g = Generatable::new(vocabulary(), VOCAB, Device::Cpu);
    let cfg = LossConfig { beta: 2.0, ..CFG };
    let (vs, student) = tiny(1);
    let ps = pairs(&student, 0.9);
    let (gd, gp) = term_grads(&vs, &student, &teacher, &ps, &cfg);
    let norm = |t: &Tensor| t.norm().double_value(&[]);
    let (nd, np) = (norm(&gd), norm(&gp));
    // A bound below both norms, so that both terms are scaled.
    let max = 0.5 * nd.min(np);
    let per_term = &gd * (max / (nd + 1e-6)) + &gp * (max / (np + 1e-6));
    let whole = (&gd + &gp) * (max / (norm(&(&gd + &gp)) + 1e-6));
    // The two rules give different updates here, so the check below tells them apart.
    assert!(
        norm(&(&per_term - &whole)) > 1e-3 * norm(&whole),
        "per-term and whole clipping agree on this batch"
    );
    let current = || {
        let flat: Vec<Tensor> = vs
            .trainable_variables()
            .iter()
            .map(|t| t.grad().flatten(0, -1).copy())
            .collect();
        Tensor::cat(&flat, 0)
    };
    for scope in [GradClip::PerTerm, GradClip::Total] {
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        opt.zero_grad();
        let l = learner::loss::loss(&student, &teacher, &ps, &g, 0.2, &cfg).unwrap();
        let terms = backward(&l, &opt, cfg.beta).unwrap();
        let norms = clip(&mut opt, &terms, Clipping { max, scope });
        let want = match scope {
            GradClip::PerTerm => per_term.shallow_clone(),
            GradClip::Total => whole.shallow_clone(),
        };
        let got = current();
        let diff = norm(&(&got - &want)) / norm(&want);
        assert!(diff < 1e-4, "{scope:?}: relative difference {diff}");
        // Each term's and the whole gradient's norms before clipping, either way.
        assert!((norms.distill - nd).abs() < 1e-4 * nd, "{norms:?}");
        assert!((norms.pg - np).abs() < 1e-4 * np, "{norms:?}");
        if scope == GradClip::PerTerm {
            // The update's distillation part is `max` long, not shrunk by the larger term.
            assert!(norm(&got) > max, "{}", norm(&got));
        }
        opt.zero_grad();
    }
}
