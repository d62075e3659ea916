//! The learner's loss on a tiny random model: the log-probabilities it recomputes match
//! what sampling recorded, the divergences vanish when student and teacher agree, the
//! distillation step moves the student toward the teacher, and the policy-gradient step
//! raises the log-probability of the better-rewarded pair. The values of the divergences,
//! of the distillation and policy-gradient terms, of the importance weights and of the
//! gradient are checked against independent computations in `divergence.rs` and
//! `policy_gradient.rs`.

#![allow(clippy::unwrap_used)]

use tch::Device;

use common::settings::Divergence;
use learner::loss::{loss, sequence_logprobs, Generatable, LossConfig};
use learner::queue::{sample_pairs, Pair};
use model::optim::{AdamW, AdamWConfig};
use model::sampling::{CfgScope, SamplingConfig};
use model::transformer::Transformer;

use testkit::{tiny as model, vocabulary, VOCAB};

fn generatable() -> Generatable {
    Generatable::new(vocabulary(), VOCAB, Device::Cpu)
}

/// Two samples for each of three prompts of different lengths, drawn from `m`.
fn pairs(m: &Transformer, rewards: [f32; 3]) -> Vec<Pair> {
    let prompts = vec![vec![4, 5, 6], vec![7], vec![8, 9, 4, 5, 6]];
    let cfg = SamplingConfig {
        max_new_tokens: 16,
        ..SamplingConfig::default()
    };
    sample_pairs(m, prompts, &vocabulary(), &cfg, 0, 1, |i| rewards[i]).unwrap()
}

fn cfg(beta: f64, divergence: Divergence, gamma: f64) -> LossConfig {
    LossConfig {
        beta,
        cfg_gamma: gamma,
        cfg_plausibility: 0.0,
        cfg_scope: CfgScope::All,
        divergence,
        jsd_alpha: 0.5,
        rho_bar: 1.0,
    }
}

#[test]
fn recomputed_logprobs_match_the_sampler() {
    let (_vs, m) = model(1);
    let ps = pairs(&m, [0.1, 0.2, 0.3]);
    let recomputed = sequence_logprobs(&m, &ps, &generatable()).unwrap();
    let recorded: Vec<f64> = ps
        .iter()
        .flat_map(|p| {
            p.samples
                .iter()
                .map(|(_, lp)| lp.iter().map(|&x| f64::from(x)).sum())
        })
        .collect();
    assert_eq!(recomputed.len(), 6);
    for (a, b) in recomputed.iter().zip(&recorded) {
        assert!((a - b).abs() < 1e-3, "{recomputed:?} vs {recorded:?}");
    }
    // So the importance ratio of fresh samples is 1: nothing is clipped.
    let l = loss(
        &m,
        &m,
        &ps,
        &generatable(),
        0.0,
        &cfg(1.0, Divergence::ReverseKl, 1.0),
    )
    .unwrap();
    assert_eq!(l.stats.clip_fraction, 0.0);
    // Every pair weighs (about) 1: the policy-gradient term has all of its samples.
    for w in [l.stats.weight_mean, l.stats.weight_min, l.stats.weight_ess] {
        assert!((w - 1.0).abs() < 1e-2, "{:?}", l.stats);
    }
}

#[test]
fn divergences_vanish_only_when_student_and_teacher_agree() {
    let (_a, student) = model(1);
    let (_b, other) = model(2);
    let ps = pairs(&student, [0.5; 3]);
    let g = generatable();
    for d in [
        Divergence::ReverseKl,
        Divergence::ForwardKl,
        Divergence::Jsd,
    ] {
        let same = loss(&student, &student, &ps, &g, 0.0, &cfg(0.0, d, 1.0)).unwrap();
        assert!(
            same.stats.distill.abs() < 1e-4 && same.stats.kl.abs() < 1e-6,
            "{d:?}: {:?}",
            same.stats
        );
        let diff = loss(&student, &other, &ps, &g, 0.0, &cfg(0.0, d, 1.0)).unwrap();
        assert!(
            diff.stats.distill > 1e-3 && diff.stats.kl > 1e-4,
            "{d:?}: {:?}",
            diff.stats
        );
        // The same model as its own CFG teacher with γ ≠ 1 is another distribution,
        // whatever the guidance scope; with γ = 1 both scopes are the conditional.
        for scope in [CfgScope::All, CfgScope::Content] {
            let with = |gamma| LossConfig {
                cfg_scope: scope,
                ..cfg(0.0, d, gamma)
            };
            let same = loss(&student, &student, &ps, &g, 0.0, &with(1.0)).unwrap();
            assert!(
                same.stats.kl.abs() < 1e-5,
                "{d:?} {scope}: {:?}",
                same.stats
            );
            let guided = loss(&student, &student, &ps, &g, 0.0, &with(3.0)).unwrap();
            assert!(guided.stats.kl > 1e-4, "{d:?} {scope}: {:?}", guided.stats);
        }
    }
    // With the plausibility constraint the teacher excludes ids: every divergence stays
    // finite, and the student is pushed off them.
    for d in [
        Divergence::ReverseKl,
        Divergence::ForwardKl,
        Divergence::Jsd,
    ] {
        let c = LossConfig {
            cfg_plausibility: 0.2,
            ..cfg(0.0, d, 3.0)
        };
        let l = loss(&student, &student, &ps, &g, 0.0, &c).unwrap();
        assert!(
            l.stats.loss.is_finite() && l.stats.kl > 1e-3,
            "{d:?}: {:?}",
            l.stats
        );
    }
}

#[test]
fn distillation_moves_the_student_toward_the_cfg_teacher() {
    let (vs, student) = model(1);
    let (_t, teacher) = model(2);
    let g = generatable();
    let c = cfg(0.0, Divergence::ReverseKl, 3.0);
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let ps = pairs(&student, [0.5; 3]);
    let first = loss(&student, &teacher, &ps, &g, 0.0, &c).unwrap().stats.kl;
    for _ in 0..20 {
        opt.zero_grad();
        let l = loss(&student, &teacher, &ps, &g, 0.0, &c).unwrap();
        l.total.backward();
        opt.clip_grad_norm(1.0);
        opt.step(1e-2);
    }
    let last = loss(&student, &teacher, &ps, &g, 0.0, &c).unwrap().stats.kl;
    assert!(last < 0.5 * first, "KL {first} → {last}");
}

#[test]
fn the_policy_gradient_favours_the_better_rewarded_pair() {
    let (vs, student) = model(1);
    let g = generatable();
    // Teacher = student with γ = 1: no distillation gradient, the PG term alone.
    let c = cfg(1.0, Divergence::ReverseKl, 1.0);
    let ps = pairs(&student, [1.5, 0.0, 0.75]);
    let before = sequence_logprobs(&student, &ps, &g).unwrap();
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    opt.zero_grad();
    let l = loss(&student, &student, &ps, &g, 0.75, &c).unwrap();
    l.total.backward();
    opt.step(1e-3);
    let after = sequence_logprobs(&student, &ps, &g).unwrap();
    let delta = |i: usize| (after[2 * i] - before[2 * i]) + (after[2 * i + 1] - before[2 * i + 1]);
    assert!(delta(0) > 0.0, "rewarded pair: {before:?} → {after:?}");
    assert!(delta(1) < 0.0, "unrewarded pair: {before:?} → {after:?}");
}
