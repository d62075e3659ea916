//! Fixtures shared by the test files of every crate: a fixture corpus, tiny random
//! policies and their vocabulary, and a second, synthetic task ([`synthetic`]).

#![allow(clippy::unwrap_used)]

pub mod synthetic;

use std::path::Path;

use folk::dataset::COLLECTIONS;

/// Writes a corpus with every collection folder: 60 varied tunes, a duplicate and a few
/// that are skipped.
pub fn write_corpus(raw: &Path) {
    for c in COLLECTIONS {
        std::fs::create_dir_all(raw.join(c)).unwrap();
    }
    let mut essen = String::new();
    for i in 0..40 {
        let pitches = ["C", "D", "E", "F", "G", "A", "B", "c"];
        let notes = format!("CDEF{}{}Bc", pitches[i / 8], pitches[i % 8]);
        essen.push_str(&format!(
            "X:{i}\nT:Lied {i}\nO:Europa, Mitteleuropa, Deutschland\nR:Liebeslied]\nM:2/4\nL:1/16\nK:G\n{notes}|{notes}|]\n\n"
        ));
    }
    essen.push_str(
        "X:99\nT:dup\nO:Luxemburg\nR:Ballade]\nM:2/4\nL:1/16\nK:G\nCDEFCCBc|CDEFCCBc|]\n\n",
    );
    essen.push_str("X:100\nT:chords\nM:2/4\nL:1/16\nK:G\n[CEG]4 |]\n\n");
    std::fs::write(raw.join("essenFolksong/kinder0.abc"), essen).unwrap();
    let mut oneill = String::new();
    for i in 0..20 {
        let (a, b) = (
            ["d", "e", "f", "g", "a"][i % 5],
            ["B", "A", "G", "F"][i / 5],
        );
        oneill.push_str(&format!(
            "X: {i}\nT: The {i} Reel\nN: \"Lively\" \"collected by F. O'Neill\"\nM:C|\nL:1/8\nK:D\n{a}{b}AF D2 {a}2|(3ABc d>e f2 e2:|\n\n"
        ));
    }
    oneill.push_str("X: 21\nT: Voices\nM:C\nL:1/8\nK:D\nV:1\nABcd|\n");
    std::fs::write(raw.join("oneills1850/0001-0050.abc"), oneill).unwrap();
}

/// Prepares the fixture corpus into `dir/folk` and returns that folder.
pub fn fixture_dataset(dir: &Path) -> std::path::PathBuf {
    let raw = dir.join("raw");
    write_corpus(&raw);
    let out = dir.join("folk");
    let cfg = folk::dataset::PrepareConfig {
        raw,
        out: out.clone(),
        seed: 0,
        max_tokens: 1024,
    };
    folk::dataset::prepare(&cfg).unwrap();
    out
}

/// Vocabulary size of the random tiny models below.
pub const VOCAB: usize = 40;

/// A randomly initialised `tiny` policy over [`VOCAB`] ids, seeded.
pub fn tiny(seed: i64) -> (tch::nn::VarStore, model::transformer::Transformer) {
    tch::manual_seed(seed);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = model::transformer::Transformer::new(
        &vs.root(),
        &model::config::Preset::Tiny.config(VOCAB),
    );
    (vs, model)
}

/// The ids of the tiny models: 0 pad, 1 sep, 2 eos, 3 unk, 4..10 words, 10..40 tune tokens;
/// for `CfgScope::Content`, ids 10..22 are "pitches" and 22..25 "keys" (positions 1..13
/// and 13..16 of the allowed ids).
pub fn vocabulary() -> model::sampling::Vocabulary {
    model::sampling::Vocabulary {
        pad: 0,
        sep: 1,
        eos: 2,
        allowed: std::iter::once(2).chain(10..VOCAB as u32).collect(),
        content_groups: vec![(1..13).collect(), (13..16).collect()],
    }
}

/// The gradient of `loss` for every variable of `vs`, sorted by name (earlier gradients
/// zeroed first, so that two losses of one model can be compared).
pub fn gradients(vs: &tch::nn::VarStore, loss: &tch::Tensor) -> Vec<(String, tch::Tensor)> {
    for (_, t) in vs.variables() {
        let mut g = t.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    loss.backward();
    let mut grads: Vec<(String, tch::Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.grad().copy()))
        .collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    grads
}

/// The repository's root folder.
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Fails the calling test, naming the set-up step, when `path` (relative to the
/// repository root) is missing: a test whose precondition is absent must not pass.
pub fn require_setup(path: &str) -> std::path::PathBuf {
    let p = repo_root().join(path);
    assert!(
        p.exists(),
        "{} is missing: run `make setup` first (`make test` runs it)",
        p.display()
    );
    p
}
