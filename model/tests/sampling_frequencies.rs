//! What `model::sampling::sample` draws, against the distribution it should draw from,
//! computed here from the model's own forward pass (one unpadded row), restricted to the
//! allowed ids: the first generated token of 4,000 rows with fixed seeds is compared with
//! `softmax(ℓ/T)` (temperature), with that distribution cut to the `k` most likely ids and
//! renormalised (top-k), and with the CFG distribution `softmax(u + γ·(c − u))` over the
//! plausible ids, by a χ² goodness-of-fit test at p = 0.001 (bins with an expected count
//! below 5 merged). The log-probability the sampler records for each draw must be the
//! reference's.

#![allow(clippy::unwrap_used)]

use model::sampling::{sample, SamplingConfig};
use model::transformer::Transformer;
use tch::{Device, Kind, Tensor};

use testkit::{tiny, vocabulary};

const ROWS: usize = 4000;
const PROMPT: [u32; 3] = [4, 5, 6];

/// Log-probabilities over the allowed ids of the token after `prefix <sep>`, in `f64`.
fn next_logprobs(model: &Transformer, prefix: &[u32]) -> Vec<f64> {
    let v = vocabulary();
    let ids: Vec<i64> = prefix
        .iter()
        .chain([&v.sep])
        .map(|&x| i64::from(x))
        .collect();
    let row = Tensor::from_slice(&ids).view([1, -1]);
    let valid = Tensor::ones([1, ids.len() as i64], (Kind::Bool, Device::Cpu));
    let logits = tch::no_grad(|| {
        model.forward(
            &row,
            &valid,
            Some(&testkit::toy_features(&row)),
            None,
            false,
        )
    })
    .select(1, -1)
    .squeeze_dim(0)
    .to_kind(Kind::Double);
    let logits = Vec::<f64>::try_from(logits).unwrap();
    let allowed: Vec<f64> = v.allowed.iter().map(|&id| logits[id as usize]).collect();
    log_normalise(&allowed)
}

fn log_normalise(x: &[f64]) -> Vec<f64> {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

/// `softmax(ℓ/T)`, cut to the `k` largest and renormalised.
fn reference(logp: &[f64], temperature: f64, top_k: Option<usize>) -> Vec<f64> {
    let mut scaled: Vec<f64> = logp.iter().map(|l| l / temperature).collect();
    if let Some(k) = top_k {
        let mut sorted = scaled.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[k - 1];
        for s in &mut scaled {
            if *s < kth {
                *s = f64::NEG_INFINITY;
            }
        }
    }
    log_normalise(&scaled).iter().map(|l| l.exp()).collect()
}

/// `ln Γ(x)` (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + 7.5;
    let s: f64 = C[0]
        + C[1..]
            .iter()
            .enumerate()
            .map(|(i, c)| c / (x + i as f64 + 1.0))
            .sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// The regularised upper incomplete gamma function `Q(a, x)` (Numerical Recipes: the
/// series below `a + 1`, the continued fraction above).
fn gamma_q(a: f64, x: f64) -> f64 {
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        while term.abs() > sum.abs() * 1e-16 {
            n += 1.0;
            term *= x / n;
            sum += term;
        }
        1.0 - sum * front
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -f64::from(i) * (f64::from(i) - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        front * h
    }
}

/// `P(χ²_df ≥ x)`.
fn chi2_survival(x: f64, df: usize) -> f64 {
    gamma_q(df as f64 / 2.0, x / 2.0)
}

/// The χ² value with survival `p` at `df` degrees of freedom (bisection).
fn chi2_critical(p: f64, df: usize) -> f64 {
    let (mut lo, mut hi) = (0.0, 1e4);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if chi2_survival(mid, df) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// χ² and its degrees of freedom of `observed` counts against `expected` probabilities
/// (ids with probability 0 left out; bins expecting fewer than 5 draws merged).
fn chi2(observed: &[usize], expected: &[f64]) -> (f64, usize) {
    let n: usize = observed.iter().sum();
    let mut bins: Vec<(f64, f64)> = observed
        .iter()
        .zip(expected)
        .filter(|(_, &p)| p > 0.0)
        .map(|(&o, &p)| (o as f64, p * n as f64))
        .collect();
    bins.sort_by(|a, b| a.1.total_cmp(&b.1));
    // Pool every bin expecting fewer than 5 draws, then, while the pool itself expects
    // fewer than 5, the next smallest bins.
    let mut pool = (0.0, 0.0);
    let mut rest = bins.into_iter().peekable();
    while let Some(&(o, e)) = rest.peek() {
        if e >= 5.0 && (pool.1 == 0.0 || pool.1 >= 5.0) {
            break;
        }
        pool = (pool.0 + o, pool.1 + e);
        rest.next();
    }
    let merged: Vec<(f64, f64)> = std::iter::once(pool)
        .filter(|p| p.1 > 0.0)
        .chain(rest)
        .collect();
    assert!(merged.iter().all(|b| b.1 >= 5.0), "{merged:?}");
    let stat = merged.iter().map(|(o, e)| (o - e).powi(2) / e).sum();
    (stat, merged.len() - 1)
}

/// Draws the first token of `ROWS` rows of the same prompt and checks the draws and the
/// recorded log-probabilities against `expected` (over the allowed ids).
fn check_draws(model: &Transformer, cfg: &SamplingConfig, seed0: u64, expected: &[f64]) {
    let v = vocabulary();
    let prompts = vec![PROMPT.to_vec(); ROWS];
    let seeds: Vec<u64> = (0..ROWS as u64).map(|i| seed0 + i).collect();
    let s = sample(model, &prompts, &seeds, &v, cfg).unwrap();
    let mut counts = vec![0usize; v.allowed.len()];
    for tokens in &s.tokens {
        counts[v.allowed.iter().position(|&a| a == tokens[0]).unwrap()] += 1;
    }
    for (j, (&c, &p)) in counts.iter().zip(expected).enumerate() {
        assert!(
            p > 0.0 || c == 0,
            "{cfg:?}: position {j} has p = 0, drawn {c}×"
        );
    }
    let (stat, df) = chi2(&counts, expected);
    let critical = chi2_critical(0.001, df);
    assert!(
        stat < critical,
        "{cfg:?}: χ² = {stat:.1} ≥ {critical:.1} (df {df}, p = {:.2e})\nobserved {counts:?}\nexpected {:?}",
        chi2_survival(stat, df),
        expected.iter().map(|p| p * ROWS as f64).collect::<Vec<_>>()
    );
    // The recorded log-probability of each draw is the reference's.
    for (tokens, logprobs) in s.tokens.iter().zip(&s.logprobs) {
        let j = v.allowed.iter().position(|&a| a == tokens[0]).unwrap();
        let want = expected[j].ln();
        assert!(
            (f64::from(logprobs[0]) - want).abs() < 1e-4,
            "{cfg:?}: id {} recorded log-prob {} vs {want}",
            tokens[0],
            logprobs[0]
        );
    }
}

#[test]
fn the_chi2_tail_matches_the_tables() {
    // χ² quantiles at p = 0.001 (and one at p = 0.05) from standard tables.
    for (x, df, p) in [
        (10.828, 1, 0.001),
        (13.816, 2, 0.001),
        (29.588, 10, 0.001),
        (59.703, 30, 0.001),
        (3.841, 1, 0.05),
        (43.773, 30, 0.05),
    ] {
        let q = chi2_survival(x, df);
        assert!((q / p - 1.0).abs() < 1e-3, "df {df}: Q({x}) = {q}");
        assert!((chi2_critical(p, df) - x).abs() < 2e-3);
    }
    // 40 draws: the two rare ids (0.2 expected each) pool with the next smallest bin
    // (7.6), expecting 8 and observing 8; the others contribute 2²/8 + 0 + 2²/8 + 0.
    let (stat, df) = chi2(
        &[10, 8, 6, 8, 8, 0, 0],
        &[0.2, 0.2, 0.2, 0.2, 0.19, 0.005, 0.005],
    );
    assert_eq!(df, 4);
    assert!((stat - 1.0).abs() < 1e-9, "{stat}");
}

#[test]
fn draws_at_a_temperature_follow_the_softmax_of_logits_over_t() {
    let (_vs, model) = tiny(3);
    let logp = next_logprobs(&model, &PROMPT);
    for (case, temperature) in [0.7, 1.3].into_iter().enumerate() {
        let cfg = SamplingConfig {
            temperature,
            max_new_tokens: 1,
            ..SamplingConfig::default()
        };
        let expected = reference(&logp, temperature, None);
        check_draws(&model, &cfg, 1_000_000 * case as u64, &expected);
    }
}

#[test]
fn top_k_draws_only_the_k_most_likely_renormalised() {
    let (_vs, model) = tiny(3);
    let logp = next_logprobs(&model, &PROMPT);
    for (case, temperature) in [1.0, 1.3].into_iter().enumerate() {
        let cfg = SamplingConfig {
            temperature,
            top_k: Some(3),
            max_new_tokens: 1,
            ..SamplingConfig::default()
        };
        let expected = reference(&logp, temperature, Some(3));
        assert_eq!(expected.iter().filter(|&&p| p > 0.0).count(), 3);
        check_draws(&model, &cfg, 3_000_000 + 1_000_000 * case as u64, &expected);
    }
}

#[test]
fn cfg_draws_follow_the_guided_distribution_over_the_plausible_ids() {
    let (_vs, model) = tiny(3);
    let (c, u) = (next_logprobs(&model, &PROMPT), next_logprobs(&model, &[]));
    let (gamma, alpha) = (2.0, 0.2);
    let max = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let guided: Vec<f64> = c
        .iter()
        .zip(&u)
        .map(|(&c, &u)| {
            if c.exp() < alpha * max.exp() {
                f64::NEG_INFINITY
            } else {
                u + gamma * (c - u)
            }
        })
        .collect();
    let expected = reference(&guided, 1.0, None);
    let excluded = expected.iter().filter(|&&p| p == 0.0).count();
    assert!(
        excluded > 0 && excluded < expected.len() - 1,
        "{expected:?}"
    );
    let cfg = SamplingConfig {
        cfg_gamma: Some(gamma),
        cfg_plausibility: Some(alpha),
        max_new_tokens: 1,
        ..SamplingConfig::default()
    };
    check_draws(&model, &cfg, 6_000_000, &expected);
}
