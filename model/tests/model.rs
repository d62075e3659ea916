//! The policy model on the `tiny` preset: KV-cache decoding against the full forward,
//! CFG and batching invariants of sampling, checkpoints, and learning one batch. The CFG
//! formula's values are checked in `guide.rs`, the sampler's draws in
//! `sampling_frequencies.rs`.

#![allow(clippy::unwrap_used)]

use model::batch::{lm_batch, lm_loss, lm_loss_grouped};
use model::checkpoint::{save, Checkpoint, ModelKind, Stamp};
use model::config::{ModelConfig, Preset};
use model::optim::{AdamW, AdamWConfig};
use model::sampling::{sample, CfgScope, SamplingConfig};
use model::transformer::{KvCache, Transformer};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use testkit::{tiny, toy_features, vocabulary, VOCAB};

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![4, 5, 6], vec![7], vec![8, 9, 4, 5, 6], vec![]]
}

#[test]
fn kv_cache_matches_full_forward() {
    let (_vs, model) = tiny(1);
    // Left-padded rows of different lengths, then 150 more tokens decoded one at a time:
    // past the cache's first buffer (the prompt and 64 more) and its first doubling.
    let rows: Vec<Vec<i64>> = vec![
        vec![0, 0, 4, 5, 1],
        vec![0, 0, 0, 7, 1],
        vec![8, 9, 4, 5, 1],
    ];
    const STEPS: i64 = 150;
    let cont: Vec<Vec<i64>> = (0..3)
        .map(|r| (0..STEPS).map(|j| 10 + (7 * r + 3 * j) % 30).collect())
        .collect();
    let full: Vec<i64> = rows
        .iter()
        .zip(&cont)
        .flat_map(|(r, c)| r.iter().chain(c).copied())
        .collect();
    let total = 5 + STEPS;
    let full = Tensor::from_slice(&full).view([3, total]);
    let valid = full.ne(0);
    let features = toy_features(&full);
    let reference = tch::no_grad(|| {
        model.forward(
            &full,
            &valid,
            Some(&features),
            Some(&mut KvCache::new(2)),
            false,
        )
    });

    let mut cache = KvCache::new(2);
    let prefix = full.narrow(1, 0, 5);
    let mut steps = vec![tch::no_grad(|| {
        let f = features.narrow(1, 0, 5);
        model.forward(
            &prefix,
            &valid.narrow(1, 0, 5),
            Some(&f),
            Some(&mut cache),
            false,
        )
    })];
    for j in 5..total {
        let tok = full.narrow(1, j, 1);
        steps.push(tch::no_grad(|| {
            let f = features.narrow(1, j, 1);
            model.forward(
                &tok,
                &valid.narrow(1, j, 1),
                Some(&f),
                Some(&mut cache),
                false,
            )
        }));
    }
    assert_eq!(cache.len(), total);
    let incremental = Tensor::cat(&steps, 1);
    // Compare at real-token positions only.
    let diff = (reference - incremental)
        .abs()
        .amax([2], false)
        .masked_select(&valid)
        .max()
        .double_value(&[]);
    assert!(diff < 1e-4, "max |Δlogit| = {diff}");

    // Right-padded rows without a cache take the fused causal kernel: same logits.
    let right = Tensor::from_slice(&[4i64, 5, 1, 10, 11, 4, 1, 10, 0, 0]).view([2, 5]);
    let f = toy_features(&right);
    let fused = tch::no_grad(|| model.forward(&right, &right.ne(0), Some(&f), None, false));
    let masked = tch::no_grad(|| {
        model.forward(
            &right,
            &right.ne(0),
            Some(&f),
            Some(&mut KvCache::new(2)),
            false,
        )
    });
    let diff = (fused - masked)
        .abs()
        .amax([2], false)
        .masked_select(&right.ne(0))
        .max()
        .double_value(&[]);
    assert!(diff < 1e-4, "fused vs masked attention: {diff}");
}

#[test]
fn left_padding_does_not_change_a_rows_logits() {
    let (_vs, model) = tiny(2);
    let alone = Tensor::from_slice(&[7i64, 1, 10, 11]).view([1, 4]);
    let padded = Tensor::from_slice(&[0i64, 0, 0, 7, 1, 10, 11]).view([1, 7]);
    let (fa, fp) = (toy_features(&alone), toy_features(&padded));
    let a = tch::no_grad(|| model.forward(&alone, &alone.ne(0), Some(&fa), None, false));
    let b = tch::no_grad(|| {
        model.forward(
            &padded,
            &padded.ne(0),
            Some(&fp),
            Some(&mut KvCache::new(2)),
            false,
        )
    })
    .narrow(1, 3, 4);
    assert!((a - b).abs().max().double_value(&[]) < 1e-4);
}

#[test]
fn cfg_gamma_one_samples_as_conditional() {
    let (_vs, model) = tiny(3);
    let seeds = [11, 12, 13, 14];
    let base = SamplingConfig {
        max_new_tokens: 40,
        ..SamplingConfig::default()
    };
    let plain = sample(&model, &prompts(), &seeds, &vocabulary(), &base).unwrap();
    for scope in [CfgScope::All, CfgScope::Content] {
        let guided = |gamma| {
            let cfg = SamplingConfig {
                cfg_gamma: Some(gamma),
                cfg_scope: scope,
                ..base.clone()
            };
            sample(&model, &prompts(), &seeds, &vocabulary(), &cfg)
                .unwrap()
                .tokens
        };
        assert_eq!(plain.tokens, guided(1.0), "{scope}");
        assert_ne!(
            plain.tokens,
            guided(3.0),
            "{scope}: γ = 3 changes the distribution"
        );
    }
}

/// The plausibility constraint without guidance truncates plain sampling: the same draws
/// as CFG with γ = 1 and the constraint (one forward row a prompt instead of two), other
/// draws than no constraint, and never an id below α times the most likely one.
#[test]
fn plausibility_alone_truncates_plain_sampling() {
    let (_vs, model) = tiny(3);
    let seeds = [11, 12, 13, 14];
    let cfg = |gamma, plausibility| SamplingConfig {
        cfg_gamma: gamma,
        cfg_plausibility: plausibility,
        max_new_tokens: 40,
        ..SamplingConfig::default()
    };
    let draw = |c: &SamplingConfig| sample(&model, &prompts(), &seeds, &vocabulary(), c).unwrap();
    let alone = draw(&cfg(None, Some(0.3)));
    assert_eq!(alone.tokens, draw(&cfg(Some(1.0), Some(0.3))).tokens);
    assert_ne!(alone.tokens, draw(&cfg(None, None)).tokens);
    let scored = model::sampling::guided_logprobs(
        &model,
        &prompts(),
        &alone.tokens,
        &vocabulary(),
        &cfg(None, None),
    )
    .unwrap();
    for (row, ids) in scored.iter().zip(&alone.tokens) {
        for (dist, id) in row.iter().zip(ids) {
            let best = dist.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let a = vocabulary().allowed.iter().position(|x| x == id).unwrap();
            assert!(dist[a] >= best + 0.3f32.ln() - 1e-5, "{id} below the cut");
        }
    }
}

#[test]
fn batched_sampling_equals_one_at_a_time() {
    let (_vs, model) = tiny(4);
    let seeds = [5, 6, 7, 8];
    for cfg in [
        SamplingConfig {
            max_new_tokens: 30,
            ..SamplingConfig::default()
        },
        SamplingConfig {
            max_new_tokens: 30,
            temperature: 0.7,
            top_k: Some(5),
            cfg_gamma: Some(2.0),
            cfg_plausibility: Some(0.05),
            cfg_scope: CfgScope::All,
        },
        SamplingConfig {
            max_new_tokens: 30,
            cfg_gamma: Some(3.0),
            cfg_scope: CfgScope::Content,
            ..SamplingConfig::default()
        },
    ] {
        let batched = sample(&model, &prompts(), &seeds, &vocabulary(), &cfg).unwrap();
        for (i, p) in prompts().iter().enumerate() {
            let one = sample(
                &model,
                std::slice::from_ref(p),
                &seeds[i..=i],
                &vocabulary(),
                &cfg,
            )
            .unwrap();
            assert_eq!(one.tokens[0], batched.tokens[i], "row {i}");
            for (x, y) in one.logprobs[0].iter().zip(&batched.logprobs[i]) {
                assert!((x - y).abs() < 1e-4);
            }
        }
        // Rows stop at their own <eos>; log-probs are finite and ≤ 0; only allowed ids.
        for (t, lp) in batched.tokens.iter().zip(&batched.logprobs) {
            assert_eq!(t.len(), lp.len());
            assert!(t.iter().all(|id| vocabulary().allowed.contains(id)));
            assert!(t.iter().take(t.len().saturating_sub(1)).all(|&id| id != 2));
            assert!(lp.iter().all(|&x| x.is_finite() && x <= 0.0));
        }
    }
}

#[test]
fn top_k_one_is_greedy() {
    let (_vs, model) = tiny(5);
    let cfg = SamplingConfig {
        max_new_tokens: 20,
        top_k: Some(1),
        ..SamplingConfig::default()
    };
    let a = sample(&model, &prompts(), &[1, 2, 3, 4], &vocabulary(), &cfg).unwrap();
    let b = sample(&model, &prompts(), &[9, 9, 9, 9], &vocabulary(), &cfg).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert!(a.logprobs.iter().flatten().all(|&x| x.abs() < 1e-6));
}

#[test]
fn checkpoints_round_trip_bit_exact_and_refuse_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.safetensors");
    let (vs, model) = tiny(6);
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let batch = lm_batch(&[(&[4, 5], &[10, 11, 12])], &vocabulary(), 64, Device::Cpu);
    lm_loss(&model, &batch, true).backward();
    opt.step(1e-3);
    let cfg = model.config.clone();
    let stamp = Stamp {
        kind: ModelKind::Policy,
        config: &cfg,
        vocab_hash: "vocabhash",
        step: 7,
        version: 3,
        extra: serde_json::json!({"note": "x"}),
    };
    save(&path, &vs, Some(&opt), stamp).unwrap();

    let ck = Checkpoint::read(&path).unwrap();
    assert_eq!(
        (ck.meta.step, ck.meta.version, ck.meta.optimizer_step),
        (7, 3, Some(1))
    );
    ck.check_compatible(&cfg, "vocabhash").unwrap();
    let (mut vs2, _m2) = tiny(99);
    ck.load_into(&mut vs2).unwrap();
    for (name, t) in vs.variables() {
        let u = &vs2.variables()[&name];
        assert!(t.equal(u), "{name} differs after load");
    }
    let mut opt2 = AdamW::new(&vs2, AdamWConfig::default());
    let (step, state) = ck.optimizer_state().unwrap();
    opt2.load_state(step, &state).unwrap();
    for ((n1, a), (n2, b)) in opt.state().iter().zip(opt2.state().iter()) {
        assert_eq!(n1, n2);
        assert!(a.equal(b), "{n1}");
    }

    // Another preset or vocabulary is refused, naming what differs.
    let other = ModelConfig {
        d_model: 64,
        d_ff: 256,
        ..cfg.clone()
    };
    let err = ck
        .check_compatible(&other, "vocabhash")
        .unwrap_err()
        .to_string();
    assert!(err.contains("d_model: 32 vs 64"), "{err}");
    assert!(ck
        .check_compatible(&cfg, "other")
        .unwrap_err()
        .to_string()
        .contains("vocabulary"));
    let vs_small = VarStore::new(Device::Cpu);
    let _small = Transformer::new(&vs_small.root(), &Preset::Small.config(VOCAB));
    let mut vs_small = vs_small;
    let before: Vec<Tensor> = vs_small
        .trainable_variables()
        .iter()
        .map(Tensor::copy)
        .collect();
    assert!(ck.load_into(&mut vs_small).is_err());
    let after = vs_small.trainable_variables();
    assert!(
        before.iter().zip(after.iter()).all(|(a, b)| a.equal(b)),
        "a refused load changes nothing"
    );

    // Truncated and corrupted files are refused.
    let bytes = std::fs::read(&path).unwrap();
    for (what, bad) in [
        ("truncated", bytes[..bytes.len() - 100].to_vec()),
        ("empty", vec![]),
        ("flipped", {
            let mut b = bytes.clone();
            let i = b.len() - 17;
            b[i] ^= 0x40;
            b
        }),
    ] {
        let p = dir.path().join(format!("{what}.safetensors"));
        std::fs::write(&p, bad).unwrap();
        let err = Checkpoint::read(&p).unwrap_err().to_string();
        assert!(
            err.contains("not a valid qd checkpoint") || err.contains("reading"),
            "{what}: {err}"
        );
    }
}

#[test]
fn a_tiny_model_overfits_one_batch() {
    let (vs, model) = tiny(7);
    let tunes: [&[u32]; 3] = [
        &[10, 11, 12, 13, 14, 15, 16],
        &[20, 21, 22, 23],
        &[30, 31, 30, 31, 30, 31],
    ];
    let prompts: [&[u32]; 3] = [&[4, 5], &[6], &[]];
    let examples: Vec<(&[u32], &[u32])> =
        prompts.iter().copied().zip(tunes.iter().copied()).collect();
    let batch = lm_batch(&examples, &vocabulary(), 64, Device::Cpu);
    let mut opt = AdamW::new(
        &vs,
        AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
    );
    let first = lm_loss(&model, &batch, true).double_value(&[]);
    let mut last = first;
    for _ in 0..300 {
        opt.zero_grad();
        let loss = lm_loss(&model, &batch, true);
        loss.backward();
        opt.clip_grad_norm(1.0);
        opt.step(1e-2);
        last = loss.double_value(&[]);
    }
    assert!(last < 0.1 * first, "loss {first} → {last}");
}

/// The loss in groups of similar length (what pre-training computes) is the one-pass
/// loss over the padded batch, and so is its gradient, whatever the grouping.
#[test]
fn grouped_loss_is_the_padded_loss() {
    let (vs, model) = tiny(11);
    let tunes: Vec<Vec<u32>> = (0..7u32)
        .map(|i| (0..3 + 5 * i).map(|j| 10 + (i * 7 + j) % 30).collect())
        .collect();
    let prompts: [&[u32]; 7] = [&[4, 5], &[6], &[], &[7, 8, 9], &[4], &[], &[5, 6]];
    let examples: Vec<(&[u32], &[u32])> = prompts
        .iter()
        .copied()
        .zip(tunes.iter().map(Vec::as_slice))
        .collect();
    let batch = lm_batch(&examples, &vocabulary(), 64, Device::Cpu);
    let gradient = |loss: Tensor| (loss.double_value(&[]), testkit::gradients(&vs, &loss));
    let (padded, reference) = gradient(lm_loss(&model, &batch, false));
    for groups in [1, 2, 3, 7, 20] {
        let (loss, grads) = gradient(lm_loss_grouped(&model, &batch, false, groups));
        assert!(
            (loss - padded).abs() < 1e-6 * padded.abs(),
            "{groups} groups: {loss} vs {padded}"
        );
        for ((name, g), (_, r)) in grads.iter().zip(&reference) {
            let diff = (g - r).abs().max().double_value(&[]);
            let scale = r.abs().max().double_value(&[]).max(1e-12);
            assert!(
                diff <= 1e-5 * scale,
                "{groups} groups, {name}: {diff} of {scale}"
            );
        }
    }
}

#[test]
fn loss_covers_tune_tokens_and_eos_only() {
    let b = lm_batch(&[(&[4, 5], &[10, 11])], &vocabulary(), 64, Device::Cpu);
    // Sequence 4 5 <sep> 10 11 <eos>: inputs 4 5 1 10 11, targets 5 1 10 11 2.
    assert_eq!(
        Vec::<i64>::try_from(&b.target.view([-1])).unwrap(),
        vec![5, 1, 10, 11, 2]
    );
    assert_eq!(
        Vec::<f32>::try_from(&b.loss_mask.view([-1])).unwrap(),
        vec![0.0, 0.0, 1.0, 1.0, 1.0]
    );
}

#[test]
fn configs_validate() {
    for p in [Preset::Tiny, Preset::Small, Preset::Base] {
        p.config(300).validate().unwrap();
    }
    let bad = ModelConfig {
        n_heads: 5,
        ..Preset::Tiny.config(10)
    };
    assert!(bad.validate().unwrap_err().contains("n_heads"));
}
