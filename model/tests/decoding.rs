//! What the sampler draws from is what `guided_logprobs` scores: teacher-forced with the
//! sampled ids, the scored distribution gives every sampled id the log-probability the
//! sampler recorded, plain and with CFG in both scopes.

#![allow(clippy::unwrap_used)]

use model::sampling::{guided_logprobs, sample, CfgScope, SamplingConfig};
use testkit::{tiny, vocabulary};

#[test]
fn scoring_the_sampled_ids_gives_the_sampled_log_probabilities() {
    let (_vs, m) = tiny(5);
    let v = vocabulary();
    let prompts = vec![vec![4, 5], vec![6], vec![7, 8, 9], vec![]];
    let seeds = [1, 2, 3, 4];
    for (gamma, scope) in [
        (None, CfgScope::All),
        (Some(3.0), CfgScope::All),
        (Some(3.0), CfgScope::Content),
    ] {
        let cfg = SamplingConfig {
            cfg_gamma: gamma,
            cfg_scope: scope,
            max_new_tokens: 12,
            ..SamplingConfig::default()
        };
        let s = sample(&m, &prompts, &seeds, &v, &cfg).unwrap();
        let scored = guided_logprobs(&m, &prompts, &s.tokens, &v, &cfg).unwrap();
        for (i, (ids, lps)) in s.tokens.iter().zip(&s.logprobs).enumerate() {
            assert_eq!(scored[i].len(), ids.len(), "row {i}");
            for (t, (&id, &lp)) in ids.iter().zip(lps).enumerate() {
                let dist = &scored[i][t];
                let total: f64 = dist.iter().map(|&x| f64::from(x).exp()).sum();
                assert!(
                    (total - 1.0).abs() < 1e-4,
                    "row {i} step {t}: sums to {total}"
                );
                let a = v.allowed.iter().position(|&x| x == id).unwrap();
                assert!(
                    (dist[a] - lp).abs() < 1e-5,
                    "{gamma:?} {scope}: row {i} step {t}: scored {} vs sampled {lp}",
                    dist[a]
                );
            }
        }
    }
}

/// Each sampled id's log-probability is the one a full forward pass (no cache) of the
/// prompt, `<sep>` and the ids before it gives: the cached decoding advances row by row.
#[test]
fn cached_decoding_matches_full_forward_passes() {
    let (_vs, m) = tiny(6);
    let v = vocabulary();
    let prompt = vec![4u32, 5, 6];
    let cfg = SamplingConfig {
        max_new_tokens: 8,
        ..SamplingConfig::default()
    };
    let s = sample(&m, std::slice::from_ref(&prompt), &[9], &v, &cfg).unwrap();
    let allowed =
        tch::Tensor::from_slice(&v.allowed.iter().map(|&x| i64::from(x)).collect::<Vec<_>>());
    assert!(s.tokens[0].len() >= 3, "{:?}", s.tokens);
    for (t, (&id, &lp)) in s.tokens[0].iter().zip(&s.logprobs[0]).enumerate() {
        let seq: Vec<i64> = prompt
            .iter()
            .chain([&v.sep])
            .chain(&s.tokens[0][..t])
            .map(|&x| i64::from(x))
            .collect();
        let ids = tch::Tensor::from_slice(&seq).view([1, -1]);
        let valid = tch::Tensor::ones([1, seq.len() as i64], (tch::Kind::Bool, tch::Device::Cpu));
        let f = testkit::toy_features(&ids);
        let logits = tch::no_grad(|| m.forward(&ids, &valid, Some(&f), None, false)).select(1, -1);
        let full = Vec::<Vec<f32>>::try_from(
            &logits
                .index_select(1, &allowed)
                .log_softmax(-1, tch::Kind::Float),
        )
        .unwrap();
        let a = v.allowed.iter().position(|&x| x == id).unwrap();
        assert!(
            (full[0][a] - lp).abs() < 1e-4,
            "step {t}: full {} vs cached {lp}",
            full[0][a]
        );
    }
}

/// Rows that finish leave the batch (their keys and values too): every row samples what
/// it samples alone, whether the rows beside it finished early or not, plain and with
/// CFG (whose unconditional rows leave with theirs).
#[test]
fn a_row_samples_the_same_whether_the_rows_beside_it_finish_or_not() {
    let (_vs, m) = tiny(5);
    let v = vocabulary();
    let prompts: Vec<Vec<u32>> = (0..12).map(|i| vec![4 + i % 6, 5 + i % 4]).collect();
    let seeds: Vec<u64> = (100..112).collect();
    for gamma in [None, Some(3.0)] {
        let cfg = SamplingConfig {
            cfg_gamma: gamma,
            max_new_tokens: 40,
            temperature: 2.0,
            ..SamplingConfig::default()
        };
        let batch = sample(&m, &prompts, &seeds, &v, &cfg).unwrap();
        let lengths: Vec<usize> = batch.tokens.iter().map(Vec::len).collect();
        let finished = batch
            .tokens
            .iter()
            .filter(|t| t.last() == Some(&v.eos))
            .count();
        // Enough rows finish early, at different steps, for the batch to shrink.
        assert!(finished >= 3, "{gamma:?}: lengths {lengths:?}");
        assert!(
            lengths.iter().max() > lengths.iter().min(),
            "{gamma:?}: {lengths:?}"
        );
        for (i, (p, &seed)) in prompts.iter().zip(&seeds).enumerate() {
            let alone = sample(&m, std::slice::from_ref(p), &[seed], &v, &cfg).unwrap();
            assert_eq!(alone.tokens[0], batch.tokens[i], "{gamma:?}: row {i}");
            for (a, b) in alone.logprobs[0].iter().zip(&batch.logprobs[i]) {
                assert!((a - b).abs() < 1e-5, "{gamma:?}: row {i}: {a} vs {b}");
            }
        }
    }
}
