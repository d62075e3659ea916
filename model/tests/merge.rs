//! Merging policy checkpoints: identity on identical inputs, exact end points, the
//! midpoint, and refusals of what cannot be merged.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Kind};

use model::checkpoint::{save, Checkpoint, ModelKind, Stamp};
use model::config::Preset;
use model::merge::{average, lerp, read_compatible, write};
use model::transformer::Transformer;

fn policy(dir: &Path, name: &str, seed: i64, preset: Preset, vocab_hash: &str) -> PathBuf {
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let c = preset.config(40);
    let _m = Transformer::new(&vs.root(), &c);
    let path = dir.join(name);
    let stamp = Stamp {
        kind: ModelKind::Policy,
        config: &c,
        vocab_hash,
        step: 7,
        version: 3,
        extra: serde_json::Value::Null,
    };
    save(&path, &vs, None, stamp).unwrap();
    path
}

fn bits(ck: &Checkpoint) -> Vec<(String, Vec<u32>)> {
    let mut v: Vec<(String, Vec<u32>)> = ck
        .tensors()
        .map(|(n, t)| {
            let f = Vec::<f32>::try_from(t.flatten(0, -1).to_kind(Kind::Float)).unwrap();
            (n.to_string(), f.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    v.sort();
    v
}

fn merged(dir: &Path, like: &Checkpoint, tensors: Vec<(String, tch::Tensor)>) -> Checkpoint {
    let out = dir.join("merged.safetensors");
    write(&out, like, tensors, serde_json::json!({"test": true})).unwrap();
    Checkpoint::read(&out).unwrap()
}

#[test]
fn end_points_are_exact_and_identical_inputs_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let a = policy(dir.path(), "a.safetensors", 1, Preset::Tiny, "v1");
    let b = policy(dir.path(), "b.safetensors", 2, Preset::Tiny, "v1");
    let cks = read_compatible(&[a.clone(), b.clone()]).unwrap();
    let (ca, cb) = (&cks[0], &cks[1]);
    assert_ne!(bits(ca), bits(cb));
    assert_eq!(
        bits(&merged(dir.path(), ca, lerp(ca, cb, 0.0).unwrap())),
        bits(ca)
    );
    assert_eq!(
        bits(&merged(dir.path(), ca, lerp(ca, cb, 1.0).unwrap())),
        bits(cb)
    );

    let same = read_compatible(&[a.clone(), a.clone(), a.clone()]).unwrap();
    assert_eq!(
        bits(&merged(
            dir.path(),
            ca,
            lerp(&same[0], &same[1], 0.37).unwrap()
        )),
        bits(ca)
    );
    assert_eq!(
        bits(&merged(dir.path(), ca, average(&same).unwrap())),
        bits(ca)
    );

    // The midpoint is the mean, and the merged file is an ordinary policy checkpoint.
    let mid = merged(dir.path(), ca, lerp(ca, cb, 0.5).unwrap());
    let avg = merged(dir.path(), ca, average(&cks).unwrap());
    for ((n, m), (_, v)) in mid.tensors().zip(avg.tensors()) {
        let ta = ca.tensors().find(|(x, _)| *x == n).unwrap().1;
        let tb = cb.tensors().find(|(x, _)| *x == n).unwrap().1;
        let want = (ta + tb) / 2.0;
        assert!(
            f64::try_from((m - &want).abs().max()).unwrap() < 1e-6,
            "{n}"
        );
        assert!(
            f64::try_from((v - &want).abs().max()).unwrap() < 1e-6,
            "{n}"
        );
    }
    assert_eq!(mid.meta.kind, ModelKind::Policy);
    assert_eq!(mid.meta.config, ca.meta.config);
    assert_eq!(mid.meta.vocab_hash, "v1");
}

#[test]
fn what_cannot_be_merged_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let a = policy(dir.path(), "a.safetensors", 1, Preset::Tiny, "v1");
    let small = policy(dir.path(), "small.safetensors", 1, Preset::Small, "v1");
    let other_vocab = policy(dir.path(), "o.safetensors", 1, Preset::Tiny, "v2");
    let e = format!("{:#}", read_compatible(&[a.clone(), small]).unwrap_err());
    assert!(e.contains("d_model"), "{e}");
    let e = format!(
        "{:#}",
        read_compatible(&[a.clone(), other_vocab]).unwrap_err()
    );
    assert!(e.contains("vocabulary"), "{e}");
    let cks = read_compatible(&[a.clone(), a.clone()]).unwrap();
    assert!(lerp(&cks[0], &cks[1], 1.5).is_err());
    assert!(lerp(&cks[0], &cks[1], f64::NAN).is_err());
    std::fs::write(dir.path().join("bad.safetensors"), b"not a checkpoint").unwrap();
    assert!(read_compatible(&[a, dir.path().join("bad.safetensors")]).is_err());
}
