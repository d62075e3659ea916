//! `qd data prepare` on a small corpus written by the test: determinism of the split and
//! the captions, vocabulary round trips, and the summary's counts.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use folk::caption::prompt_words;
use folk::dataset::{prepare, Dataset, PrepareConfig, Split};

use testkit::write_corpus;

fn prepare_into(dir: &Path, seed: u64) -> folk::dataset::Summary {
    let raw = dir.join("raw");
    if !raw.exists() {
        write_corpus(&raw);
    }
    let cfg = PrepareConfig {
        raw,
        out: dir.join(format!("out{seed}")),
        seed,
        max_tokens: 1024,
    };
    prepare(&cfg).unwrap()
}

#[test]
fn prepare_counts_parses_and_skips() {
    let dir = tempfile::tempdir().unwrap();
    let s = prepare_into(dir.path(), 7);
    assert_eq!(s.found, 63);
    assert_eq!(s.parsed, 61);
    assert_eq!(s.skipped.get("chord"), Some(&1));
    assert_eq!(s.skipped.get("multiple voices"), Some(&1));
    assert_eq!(s.duplicates, 1, "X:99 repeats tune 0");
    assert_eq!(s.kept, 60);
    assert_eq!(s.splits.values().sum::<usize>(), 60);
    assert_eq!(s.attributes["genre"].get("love song"), Some(&40));
    assert_eq!(s.attributes["genre"].get("reel"), Some(&20));
    assert_eq!(s.attributes["origin"].get("irish"), Some(&20));
    assert_eq!(s.attributes["tempo"].get("lively"), Some(&20));
    assert!(
        (s.bars_fit - 1.0).abs() < 1e-9,
        "fixture bars all fit: {}",
        s.bars_fit
    );
}

#[test]
fn same_seed_same_split_and_captions() {
    let dir = tempfile::tempdir().unwrap();
    prepare_into(dir.path(), 3);
    let a = std::fs::read(dir.path().join("out3/dataset.json")).unwrap();
    std::fs::rename(dir.path().join("out3"), dir.path().join("first")).unwrap();
    prepare_into(dir.path(), 3);
    let b = std::fs::read(dir.path().join("out3/dataset.json")).unwrap();
    assert!(a == b, "two runs with the same seed differ");

    prepare_into(dir.path(), 4);
    let x = Dataset::load(&dir.path().join("out3")).unwrap();
    let y = Dataset::load(&dir.path().join("out4")).unwrap();
    let captions = |d: &Dataset| {
        d.records
            .iter()
            .map(|r| r.caption.clone())
            .collect::<Vec<_>>()
    };
    let splits = |d: &Dataset| d.records.iter().map(|r| r.split).collect::<Vec<_>>();
    assert_ne!(
        captions(&x),
        captions(&y),
        "another seed gives other captions"
    );
    assert_ne!(splits(&x), splits(&y), "another seed gives another split");
}

#[test]
fn records_decode_and_prompts_encode() {
    let dir = tempfile::tempdir().unwrap();
    prepare_into(dir.path(), 0);
    let ds = Dataset::load(&dir.path().join("out0")).unwrap();
    assert!(ds.split(Split::Train).count() > 40);
    for r in ds.split(Split::Train) {
        let toks = ds.vocab.decode_tune(&r.tune).unwrap();
        assert_eq!(ds.vocab.encode_tune(&toks), r.tune);
        let (ids, unknown) = ds.vocab.encode_prompt(&r.caption);
        assert_eq!(ids, r.prompt);
        assert!(
            unknown.is_empty(),
            "training captions are in the vocabulary"
        );
        assert_eq!(prompt_words(&r.caption).len(), r.prompt.len());
    }
    let (_, unknown) = ds.vocab.encode_prompt("a zorblax reel");
    assert_eq!(unknown, vec!["zorblax".to_string()]);
    assert!(ds.vocab.decode_tune(&[ds.vocab.len() as u32]).is_err());
    assert!(
        ds.vocab.decode_tune(&[4]).is_err(),
        "a prompt word is not a tune token"
    );
}

#[test]
fn a_corrupt_dataset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    prepare_into(dir.path(), 0);
    let path = dir.path().join("out0/dataset.json");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Dataset::load(&dir.path().join("out0")).unwrap_err();
    assert!(format!("{err:#}").contains("not a qd dataset"), "{err:#}");
    let missing = Dataset::load(&dir.path().join("nowhere")).unwrap_err();
    assert!(
        format!("{missing:#}").contains("qd data prepare"),
        "{missing:#}"
    );
}
