//! The learner's teacher is the distribution `qd eval --cfg γ` samples from: its CFG
//! log-probabilities over a batch of pairs (one full forward per row) equal the
//! sampler's guided distribution (KV-cache decoding, `guided_logprobs`) at every token,
//! in both scopes, up to the teacher's floor.

#![allow(clippy::unwrap_used)]

use tch::Device;

use common::settings::Divergence;
use learner::loss::{teacher_logprobs, Generatable, LossConfig};
use learner::queue::Pair;
use model::sampling::{guided_logprobs, sample, CfgScope, SamplingConfig};
use testkit::{tiny, vocabulary, VOCAB};

#[test]
fn the_teacher_is_the_guided_sampler() {
    let (_vs, m) = tiny(11);
    let v = vocabulary();
    let g = Generatable::new(v.clone(), VOCAB, Device::Cpu);
    let prompts = [vec![4, 5, 6], vec![7], vec![8, 9, 4, 5, 6]];
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .flat_map(|p| [p.clone(), p.clone()])
        .collect();
    let seeds: Vec<u64> = (10..16).collect();
    for scope in [CfgScope::All, CfgScope::Content] {
        let guided = SamplingConfig {
            cfg_gamma: Some(3.0),
            cfg_scope: scope,
            max_new_tokens: 10,
            ..SamplingConfig::default()
        };
        let s = sample(&m, &rows, &seeds, &v, &guided).unwrap();
        let pairs: Vec<Pair> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| Pair {
                prompt: p.clone(),
                samples: (2 * i..2 * i + 2)
                    .map(|r| (s.tokens[r].clone(), s.logprobs[r].clone()))
                    .collect(),
                reward: 0.5,
                version: 1,
            })
            .collect();
        let cfg = LossConfig {
            beta: 0.0,
            cfg_gamma: 3.0,
            cfg_plausibility: 0.0,
            cfg_scope: scope,
            divergence: Divergence::ReverseKl,
            jsd_alpha: 0.5,
            rho_bar: 1.0,
        };
        let teacher = Vec::<Vec<f32>>::try_from(&teacher_logprobs(&m, &pairs, &g, &cfg)).unwrap();
        let sampler: Vec<Vec<f32>> = guided_logprobs(&m, &rows, &s.tokens, &v, &guided)
            .unwrap()
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(
            teacher.len(),
            sampler.len(),
            "{scope}: one row per generated token"
        );
        for (k, (t, u)) in teacher.iter().zip(&sampler).enumerate() {
            for (a, (&x, &y)) in t.iter().zip(u).enumerate() {
                assert!(
                    (x - y.max(-30.0)).abs() < 1e-4,
                    "{scope}: token {k}, id {a}: teacher {x} vs sampler {y}"
                );
            }
        }
    }
}
