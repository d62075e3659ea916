//! The learner's loss (`learner::loss::loss`) on tiny random models, against plain-`f64`
//! computations from log-probabilities this file computes itself (one unpadded forward
//! per sample, not the learner's batching):
//!
//! * `L_pg = −(1/P)·Σ_pairs Σ_samples w_s·(r_pair − b)·log π_θ(y_s|x)`, `log π_θ(y|x)` the
//!   sum of the generated tokens' log-probabilities over the generatable ids, `P` the
//!   number of prompts, `w_s` the pair's weight `min(ρ̄, Π_pair π_θ(y)/μ(y))` (the same for
//!   both samples of a pair: the reward is the pair's) with `μ(y)` the product of the
//!   recorded behaviour probabilities; `clip_fraction` is the share of pairs whose ratio
//!   exceeds `ρ̄` (beyond a 0.1% float tolerance);
//! * the gradient of `β·L_pg` is the gradient of that expression with `w` held constant
//!   (detached), so `β = k` and `β = 0` differ by exactly `k·L_pg` in the loss and by
//!   `k·∇L_pg` in the gradient;
//! * `L_distill = (1/P)·Σ_tokens D(π_θ(·), π_cfg(·))` with the teacher
//!   `π_cfg ∝ exp(ℓ_u + γ·(ℓ_c − ℓ_u))` (`ℓ_c`, `ℓ_u` the conditional and unconditional
//!   log-softmax over the generatable ids); `kl` is the per-token mean of `KL(π_θ‖π_cfg)`
//!   and `entropy` the per-token mean student entropy.

#![allow(clippy::unwrap_used)]

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use common::settings::Divergence;
use learner::loss::{loss, sequence_logprobs, Generatable, LossConfig};
use learner::queue::Pair;
use model::sampling::CfgScope;
use model::transformer::Transformer;

use testkit::{tiny, vocabulary, VOCAB};

fn generatable() -> Generatable {
    Generatable::new(vocabulary(), VOCAB, Device::Cpu)
}

const PROMPTS: [&[u32]; 3] = [&[4, 5, 6], &[7], &[8, 9, 4, 5, 6]];
const SAMPLES: [[&[u32]; 2]; 3] = [
    [&[10, 22, 31, 2], &[15, 15, 2]],
    [&[39, 12, 2], &[2]],
    [&[20, 21, 22, 23, 2], &[11, 2]],
];
const REWARDS: [f32; 3] = [0.9, 0.1, 0.5];
const BASELINE: f64 = 0.4;
/// `ln(π_θ(y)/μ(y))` the behaviour log-probabilities are built to give, per sample.
const LOG_RATIOS: [f64; 6] = [
    std::f64::consts::LN_2,  // 2: clipped at ρ̄ = 1
    -std::f64::consts::LN_2, // 0.5
    0.0,                     // 1: exactly ρ̄ = 1, not clipped
    2.0 * std::f64::consts::LN_2,
    -2.0 * std::f64::consts::LN_2,
    std::f64::consts::LN_2,
];

/// Per-token log-probabilities `[n, A]` over the generatable ids of `model` for the tokens
/// of `y` after `prefix <sep>`, from one unpadded row (with gradient).
fn token_logprobs(model: &Transformer, prefix: &[u32], y: &[u32]) -> Tensor {
    let v = vocabulary();
    let ids: Vec<i64> = prefix
        .iter()
        .chain([&v.sep])
        .chain(y)
        .map(|&x| i64::from(x))
        .collect();
    let row = Tensor::from_slice(&ids).view([1, -1]);
    let valid = Tensor::ones([1, ids.len() as i64], (Kind::Bool, Device::Cpu));
    let allowed: Vec<i64> = v.allowed.iter().map(|&x| i64::from(x)).collect();
    model
        .forward(
            &row,
            &valid,
            Some(&testkit::toy_features(&row)),
            None,
            false,
        )
        .squeeze_dim(0)
        // The logits at <sep> predict y_1, and so on.
        .narrow(0, prefix.len() as i64, y.len() as i64)
        .index_select(1, &Tensor::from_slice(&allowed))
        .log_softmax(-1, Kind::Float)
}

/// `log π(y|x)` `[S]` of every sample, in pair order (with gradient).
fn sequence_logps(model: &Transformer) -> Tensor {
    let allowed = vocabulary().allowed;
    let per_sample: Vec<Tensor> = PROMPTS
        .iter()
        .zip(SAMPLES)
        .flat_map(|(p, ys)| ys.map(|y| (*p, y)))
        .map(|(p, y)| {
            let pos: Vec<i64> = y
                .iter()
                .map(|id| allowed.iter().position(|a| a == id).unwrap() as i64)
                .collect();
            token_logprobs(model, p, y)
                .gather(1, &Tensor::from_slice(&pos).unsqueeze(1), false)
                .sum(Kind::Float)
        })
        .collect();
    Tensor::stack(&per_sample, 0)
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).view([-1])).unwrap()
}

fn rows_f64(t: &Tensor) -> Vec<Vec<f64>> {
    Vec::<Vec<f64>>::try_from(t.detach().to_kind(Kind::Double)).unwrap()
}

/// The pairs, their behaviour log-probabilities set so that `π_θ(y)/μ(y)` is
/// `exp(LOG_RATIOS)` under `student` (each sample's total spread evenly over its tokens).
fn pairs(logp: &[f64]) -> Vec<Pair> {
    let mut s = 0;
    PROMPTS
        .iter()
        .zip(SAMPLES)
        .zip(REWARDS)
        .map(|((p, ys), reward)| Pair {
            prompt: p.to_vec(),
            samples: ys
                .iter()
                .map(|y| {
                    let behaviour = (logp[s] - LOG_RATIOS[s]) / y.len() as f64;
                    s += 1;
                    (y.to_vec(), vec![behaviour as f32; y.len()])
                })
                .collect(),
            reward,
            version: 1,
        })
        .collect()
}

fn config(beta: f64, rho_bar: f64, divergence: Divergence, jsd_alpha: f64) -> LossConfig {
    LossConfig {
        beta,
        cfg_gamma: 3.0,
        cfg_plausibility: 0.0,
        cfg_scope: CfgScope::All,
        divergence,
        jsd_alpha,
        rho_bar,
    }
}

/// The advantage `r − b` of each sample, in order.
fn advantages() -> Vec<f64> {
    REWARDS
        .iter()
        .flat_map(|&r| [f64::from(r) - BASELINE; 2])
        .collect()
}

/// The truncated importance weight of each sample: its pair's `min(ρ̄, ρ₁·ρ₂)`.
fn weights(rho_bar: f64) -> Vec<f64> {
    LOG_RATIOS
        .chunks(2)
        .flat_map(|pair| [(pair[0] + pair[1]).exp().min(rho_bar); 2])
        .collect()
}

/// `L_pg` by hand from the samples' log-probabilities.
fn expected_pg(logp: &[f64], rho_bar: f64) -> f64 {
    let sum: f64 = weights(rho_bar)
        .iter()
        .zip(advantages())
        .zip(logp)
        .map(|((w, a), l)| w * a * l)
        .sum();
    -sum / PROMPTS.len() as f64
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-3)
}

#[test]
fn sequence_logprobs_are_the_summed_token_logprobs() {
    let (_vs, m) = tiny(1);
    let mine = to_f64(&tch::no_grad(|| sequence_logps(&m)));
    let theirs = sequence_logprobs(&m, &pairs(&mine), &generatable()).unwrap();
    assert_eq!(theirs.len(), 6);
    for (a, b) in mine.iter().zip(&theirs) {
        assert!((a - b).abs() < 1e-4, "{mine:?} vs {theirs:?}");
    }
}

#[test]
fn the_pg_term_and_clip_fraction_follow_the_truncated_importance_weights() {
    let (_s, student) = tiny(1);
    let (_t, teacher) = tiny(2);
    let g = generatable();
    let logp = to_f64(&tch::no_grad(|| sequence_logps(&student)));
    let ps = pairs(&logp);
    // The fixture clips: without the truncation the weights, and L_pg, are others.
    assert!(!close(
        expected_pg(&logp, 1.0),
        expected_pg(&logp, 100.0),
        1e-2
    ));
    // Sample ratios 2, 0.5 | 1, 4 | 0.25, 2: pair ratios 1, 4, 0.5. ρ̄ = 1 clips one pair
    // (the ratio of exactly 1 is not clipped), ρ̄ = 3 one, ρ̄ = 10 none. Per-sample
    // weights would give another L_pg at every ρ̄ (the first pair: 2 and 0.5, not 1 and 1).
    assert!(!close(
        expected_pg(&logp, 10.0),
        -LOG_RATIOS
            .iter()
            .zip(advantages())
            .zip(&logp)
            .map(|((r, a), l)| r.exp() * a * l)
            .sum::<f64>()
            / PROMPTS.len() as f64,
        1e-2
    ));
    for (rho_bar, clipped) in [(1.0, 1.0), (3.0, 1.0), (10.0, 0.0)] {
        let l = loss(
            &student,
            &teacher,
            &ps,
            &g,
            BASELINE,
            &config(1.0, rho_bar, Divergence::ReverseKl, 0.5),
        )
        .unwrap();
        let want = expected_pg(&logp, rho_bar);
        // The pairs' terms cancel in part: float error is relative to their size, not to
        // the sum's.
        let terms: f64 = weights(rho_bar)
            .iter()
            .zip(advantages())
            .zip(&logp)
            .map(|((w, a), l)| (w * a * l).abs())
            .sum::<f64>()
            / PROMPTS.len() as f64;
        assert!(
            (l.stats.pg - want).abs() <= 1e-5 * terms,
            "ρ̄ = {rho_bar}: pg {} vs {want} by hand (terms {terms})",
            l.stats.pg
        );
        assert!(
            (l.stats.clip_fraction - clipped / 3.0).abs() < 1e-6,
            "ρ̄ = {rho_bar}: clip fraction {} vs {clipped}/3",
            l.stats.clip_fraction
        );
        // The pairs' weights min(ρ̄, 1 | 4 | 0.5), summarised by hand.
        let pair_w: Vec<f64> = weights(rho_bar).iter().step_by(2).copied().collect();
        let n = pair_w.len() as f64;
        let sum: f64 = pair_w.iter().sum();
        let ess = sum * sum / (n * pair_w.iter().map(|w| w * w).sum::<f64>());
        for (got, want, what) in [
            (l.stats.weight_mean, sum / n, "mean"),
            (l.stats.weight_min, 0.5, "min"),
            (l.stats.weight_ess, ess, "ess"),
        ] {
            assert!(
                close(got, want, 1e-5),
                "ρ̄ = {rho_bar}: weight {what} {got} vs {want}"
            );
        }
        assert!(l.stats.weight_ess < 1.0 && l.stats.weight_ess > 1.0 / n);
        assert_eq!(l.stats.baseline, BASELINE);
        let rewards: Vec<f64> = REWARDS.iter().map(|&r| f64::from(r)).collect();
        let mean = rewards.iter().sum::<f64>() / 3.0;
        let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
        assert!((l.stats.reward_mean - mean).abs() < 1e-9);
        assert!((l.stats.reward_std - std).abs() < 1e-9);
        assert_eq!(
            l.stats.tokens,
            SAMPLES.iter().flatten().map(|y| y.len()).sum::<usize>()
        );
    }
}

/// Gradients of every trainable variable (concatenated), then zeroed.
fn take_grads(vs: &VarStore) -> Tensor {
    let mut flat = Vec::new();
    for mut t in vs.trainable_variables() {
        let g = t.grad();
        flat.push(if g.defined() {
            g.copy().view([-1])
        } else {
            t.zeros_like().detach().view([-1])
        });
        t.zero_grad();
    }
    Tensor::cat(&flat, 0)
}

#[test]
fn beta_adds_exactly_beta_times_the_pg_term_and_its_gradient() {
    let (vs, student) = tiny(1);
    let (_t, teacher) = tiny(2);
    let g = generatable();
    let logp = to_f64(&tch::no_grad(|| sequence_logps(&student)));
    let ps = pairs(&logp);
    let (k, rho_bar) = (0.7, 1.0);

    let run = |beta: f64| {
        vs.trainable_variables()
            .iter_mut()
            .for_each(Tensor::zero_grad);
        let l = loss(
            &student,
            &teacher,
            &ps,
            &g,
            BASELINE,
            &config(beta, rho_bar, Divergence::ReverseKl, 0.5),
        )
        .unwrap();
        l.total.backward();
        (f64::try_from(l.total.detach()).unwrap(), take_grads(&vs))
    };
    let (total0, grad0) = run(0.0);
    let (totalk, gradk) = run(k);

    // The independent expression: −(1/P)·Σ w·(r − b)·log π(y), w and r − b constants.
    let coef: Vec<f64> = weights(rho_bar)
        .iter()
        .zip(advantages())
        .map(|(w, a)| -w * a / PROMPTS.len() as f64)
        .collect();
    let expr = (sequence_logps(&student) * Tensor::from_slice(&coef).to_kind(Kind::Float))
        .sum(Kind::Float);
    assert!(close(
        f64::try_from(&expr).unwrap(),
        expected_pg(&logp, rho_bar),
        1e-5
    ));
    expr.backward();
    let grad_pg = take_grads(&vs);

    let pg = expected_pg(&logp, rho_bar);
    assert!(
        close(totalk - total0, k * pg, 1e-4),
        "loss(β = {k}) − loss(β = 0) = {} vs β·L_pg = {}",
        totalk - total0,
        k * pg
    );
    let want = &grad_pg * k;
    let norm = want.norm().double_value(&[]);
    assert!(norm > 1e-3, "the PG gradient is not negligible: {norm}");
    let err = (&gradk - &grad0 - &want).norm().double_value(&[]);
    assert!(
        err < 1e-4 * norm,
        "‖∇loss(β = {k}) − ∇loss(β = 0) − β·∇L_pg‖ = {err} (‖β·∇L_pg‖ = {norm})"
    );
    // And the distillation gradient is there too (β = 0 is not zero).
    assert!(grad0.norm().double_value(&[]) > 1e-3);
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(p, q)| p * (p / q).ln()).sum()
}

fn log_normalise(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

#[test]
fn the_distillation_term_sums_the_token_divergences_per_prompt() {
    let (_s, student) = tiny(1);
    let (_t, teacher) = tiny(2);
    let g = generatable();
    let logp = to_f64(&tch::no_grad(|| sequence_logps(&student)));
    let ps = pairs(&logp);
    let gamma = 3.0;

    // Student and teacher probabilities of every generated token, by hand.
    let mut students = Vec::new();
    let mut teachers = Vec::new();
    tch::no_grad(|| {
        for (p, ys) in PROMPTS.iter().zip(SAMPLES) {
            for y in ys {
                students.extend(rows_f64(&token_logprobs(&student, p, y)));
                let c = rows_f64(&token_logprobs(&teacher, p, y));
                let u = rows_f64(&token_logprobs(&teacher, &[], y));
                for (c, u) in c.iter().zip(&u) {
                    let guided: Vec<f64> =
                        c.iter().zip(u).map(|(c, u)| u + gamma * (c - u)).collect();
                    teachers.push(log_normalise(&guided));
                }
            }
        }
    });
    let exp = |x: &Vec<f64>| x.iter().map(|v| v.exp()).collect::<Vec<f64>>();
    let (s, t): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (
        students.iter().map(exp).collect(),
        teachers.iter().map(exp).collect(),
    );
    let n_tokens = s.len() as f64;
    let n_prompts = PROMPTS.len() as f64;
    let reverse: Vec<f64> = s.iter().zip(&t).map(|(s, t)| kl(s, t)).collect();
    let forward: Vec<f64> = s.iter().zip(&t).map(|(s, t)| kl(t, s)).collect();
    let alpha = 0.3;
    let jsd: Vec<f64> = s
        .iter()
        .zip(&t)
        .map(|(s, t)| {
            let m: Vec<f64> = s
                .iter()
                .zip(t)
                .map(|(s, t)| alpha * s + (1.0 - alpha) * t)
                .collect();
            alpha * kl(s, &m) + (1.0 - alpha) * kl(t, &m)
        })
        .collect();
    let entropy = s
        .iter()
        .map(|s| -s.iter().map(|p| p * p.ln()).sum::<f64>())
        .sum::<f64>()
        / n_tokens;
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    assert!(!close(sum(&reverse), sum(&forward), 1e-2));

    for (d, per_token) in [
        (Divergence::ReverseKl, &reverse),
        (Divergence::ForwardKl, &forward),
        (Divergence::Jsd, &jsd),
    ] {
        let l = loss(
            &student,
            &teacher,
            &ps,
            &g,
            BASELINE,
            &config(0.0, 1.0, d, alpha),
        )
        .unwrap();
        let want = sum(per_token) / n_prompts;
        assert!(
            close(l.stats.distill, want, 1e-4),
            "{d:?}: distill {} vs {want} by hand",
            l.stats.distill
        );
        assert!(close(l.stats.loss, want, 1e-4), "{d:?}: β = 0");
        // Whatever is trained, `kl` reports the reverse KL per token.
        let kl_mean = sum(&reverse) / n_tokens;
        assert!(
            close(l.stats.kl, kl_mean, 1e-4),
            "{d:?}: kl {} vs {kl_mean}",
            l.stats.kl
        );
        assert!(close(l.stats.entropy, entropy, 1e-4), "{d:?}: entropy");
    }
}
