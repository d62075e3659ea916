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
