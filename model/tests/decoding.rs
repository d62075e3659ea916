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
