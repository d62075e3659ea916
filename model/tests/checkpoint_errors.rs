//! What a refused checkpoint says: another kind or vocabulary is a model the caller must
//! not use (not damaged), a truncated or missing file is damaged (a caller may take an
//! older one).

#![allow(clippy::unwrap_used)]

use model::checkpoint::{save, Checkpoint, CheckpointError, ModelKind, Stamp};
use model::config::Preset;
use testkit::{tiny, VOCAB};

#[test]
fn refusals_say_whether_the_file_or_the_model_is_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.safetensors");
    let (vs, _m) = tiny(1);
    let config = Preset::Tiny.config(VOCAB);
    let stamp = Stamp {
        kind: ModelKind::Policy,
        config: &config,
        vocab_hash: "v1",
        step: 3,
        version: 2,
        extra: serde_json::Value::Null,
    };
    save(&path, &vs, None, stamp).unwrap();

    let ck = Checkpoint::read_for(&path, ModelKind::Policy, "v1").unwrap();
    assert_eq!((ck.meta.step, ck.meta.version), (3, 2));

    let e = Checkpoint::read_for(&path, ModelKind::Judge, "v1").unwrap_err();
    assert!(
        matches!(
            e,
            CheckpointError::WrongKind {
                found: ModelKind::Policy,
                expected: ModelKind::Judge,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_damaged());

    let e = Checkpoint::read_for(&path, ModelKind::Policy, "v2").unwrap_err();
    assert!(matches!(e, CheckpointError::Incompatible { .. }), "{e:?}");
    assert!(
        e.to_string().contains("v1") && e.to_string().contains("v2"),
        "{e}"
    );
    assert!(!e.is_damaged());

    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let e = Checkpoint::read_for(&cut, ModelKind::Policy, "v1").unwrap_err();
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e:?}");
    assert!(e.is_damaged());

    let e = Checkpoint::read_for(&dir.path().join("missing"), ModelKind::Policy, "v1").unwrap_err();
    assert!(matches!(e, CheckpointError::Unreadable { .. }), "{e:?}");
    assert!(e.is_damaged());
    // A missing file says which commands write one.
    assert!(e.to_string().contains("qd pretrain"), "{e}");
}

/// `needle` replaced by `with` (the same length) in `bytes`, once.
fn patched(bytes: &[u8], needle: &str, with: &str) -> Vec<u8> {
    assert_eq!(needle.len(), with.len());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("{needle} not in the file"));
    let mut out = bytes.to_vec();
    out[at..at + with.len()].copy_from_slice(with.as_bytes());
    out
}

#[test]
fn the_checksum_covers_the_metadata_and_a_config_is_checked_before_use() {
    let (vs, _m) = tiny(1);
    let config = Preset::Tiny.config(VOCAB);
    let stamp = |config| Stamp {
        kind: ModelKind::Policy,
        config,
        vocab_hash: "v1",
        step: 31,
        version: 27,
        extra: serde_json::json!({"baseline": 0.5}),
    };
    let bytes = model::checkpoint::serialize(&vs, None, stamp(&config)).unwrap();
    assert!(Checkpoint::from_bytes(&bytes, "ok").is_ok());
    // One digit of the step, the version or the config flipped: refused as damaged.
    for (needle, with) in [
        ("\\\"step\\\":31", "\\\"step\\\":81"),
        ("\\\"version\\\":27", "\\\"version\\\":97"),
        ("\\\"n_heads\\\":2", "\\\"n_heads\\\":0"),
    ] {
        let e = Checkpoint::from_bytes(&patched(&bytes, needle, with), "flipped").unwrap_err();
        assert!(
            e.is_damaged() && e.to_string().contains("checksum"),
            "{with}: {e}"
        );
    }
    // A config no model can be built from, with a checksum to match: refused before a
    // model is built (no division by zero), naming the field.
    let broken = model::config::ModelConfig {
        n_heads: 0,
        ..config.clone()
    };
    let bytes = model::checkpoint::serialize(&vs, None, stamp(&broken)).unwrap();
    let e = Checkpoint::from_bytes(&bytes, "broken").unwrap_err();
    assert!(e.to_string().contains("n_heads"), "{e}");
    let huge = model::config::ModelConfig {
        vocab_size: 1 << 40,
        ..config.clone()
    };
    let bytes = model::checkpoint::serialize(&vs, None, stamp(&huge)).unwrap();
    let e = Checkpoint::from_bytes(&bytes, "huge").unwrap_err();
    assert!(e.to_string().contains("vocab_size"), "{e}");
}

#[test]
fn a_version_never_exceeds_the_size_its_config_implies() {
    // The tiny model as trained, and the presets as built: the serialized blob fits the
    // bound, within its 1 MiB of header room.
    let (vs, m) = tiny(1);
    let config = m.config.clone();
    let stamp = Stamp {
        kind: ModelKind::Policy,
        config: &config,
        vocab_hash: "v1",
        step: 1,
        version: 1,
        extra: serde_json::Value::Null,
    };
    let blob = model::checkpoint::serialize(&vs, None, stamp).unwrap();
    let params: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    assert_eq!(params as u64, config.parameters());
    let bound = config.max_blob_bytes();
    assert!(blob.len() as u64 <= bound && bound - (blob.len() as u64) < 1 << 20);
    for preset in [Preset::Small, Preset::Base] {
        let c = preset.config(VOCAB);
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _m = model::transformer::Transformer::new(&vs.root(), &c);
        let n: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
        assert_eq!(n as u64, c.parameters(), "{preset:?}");
    }
}
