//! Fixtures shared by the test files of every crate: a fixture corpus, tiny random
//! policies and their vocabulary, and a second, synthetic task ([`synthetic`]).

#![allow(clippy::unwrap_used)]

pub mod synthetic;

use std::path::Path;

use folk::dataset::COLLECTIONS;
use model::structure::{Cursor, Structure, StructureSpec};

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

/// Every tune of the real corpus (`data/raw`) that parses, by collection and file in
/// order, with its file. Fails, naming `make setup`, when the corpus is missing.
pub fn corpus_tunes() -> Vec<(&'static str, std::path::PathBuf, Vec<folk::tune::Token>)> {
    require_setup(&format!("data/raw/{}", COLLECTIONS[0]));
    let raw = require_setup("data/raw");
    let mut out = Vec::new();
    for c in COLLECTIONS {
        let mut files: Vec<_> = std::fs::read_dir(raw.join(c))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| f.extension().is_some_and(|x| x == "abc"))
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let text: String = match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
            };
            for tune in folk::abc::split_tunes(&text) {
                if let Ok(p) = folk::abc::parse_tune(tune) {
                    out.push((c, f.clone(), p.tokens));
                }
            }
        }
    }
    out
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

/// A randomly initialised `tiny` policy over [`VOCAB`] ids, seeded, that embeds the
/// [`Toy`] structure (so that every path the tests run a policy through computes
/// structure features). libtorch's generator is global and tests run on parallel
/// threads: seeding and drawing happen under one lock, so that the same seed gives the
/// same weights whatever other tests do meanwhile.
pub fn tiny(seed: i64) -> (tch::nn::VarStore, model::transformer::Transformer) {
    static GLOBAL_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = GLOBAL_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut config = model::config::Preset::Tiny.config(VOCAB);
    config.structure = Some(Toy.spec());
    let model = model::transformer::Transformer::new(&vs.root(), &config);
    (vs, model)
}

/// The structure of the tiny models' outputs: after each id, how many ids were read (mod
/// 3) and whether the last was even.
#[derive(Debug)]
pub struct Toy;

impl Structure for Toy {
    fn spec(&self) -> StructureSpec {
        StructureSpec {
            name: "toy-1".into(),
            per_token: 2,
            ids: 7,
        }
    }

    fn start(&self) -> Box<dyn Cursor> {
        Box::new(ToyCursor {
            read: 0,
            last: None,
        })
    }
}

struct ToyCursor {
    read: u32,
    last: Option<u32>,
}

impl Cursor for ToyCursor {
    fn features(&self, out: &mut [i64]) {
        out[0] = 1 + i64::from(self.read % 3);
        out[1] = 4 + self.last.map_or(2, |id| i64::from(id % 2));
    }

    fn read(&mut self, id: u32) {
        self.read += 1;
        self.last = Some(id);
    }
}

/// The [`Toy`] features `[B, T, 2]` of id rows as the tiny models take them: a row's ids
/// after its `<sep>` (id 1) are its output, the ones before it the prompt (feature 0),
/// and left padding (id 0 before any other id) is feature 0 too.
pub fn toy_features(ids: &tch::Tensor) -> tch::Tensor {
    let rows = Vec::<Vec<i64>>::try_from(ids).unwrap();
    let t = rows.first().map_or(0, Vec::len);
    let (mut f, mut starts) = (Vec::new(), Vec::new());
    for r in &rows {
        let lead = r.iter().take_while(|&&x| x == 0).count();
        let sep = r.iter().position(|&x| x == 1).unwrap_or(t);
        let output: Vec<u32> = r
            .get(sep + 1..)
            .unwrap_or(&[])
            .iter()
            .map(|&x| x as u32)
            .collect();
        let prompt_len = sep.min(t) - lead.min(sep);
        let mut row = model::structure::row_features(&Toy, prompt_len, &output);
        row.truncate((t - lead) * 2);
        f.push(row);
        starts.push(lead);
    }
    model::structure::batch_tensor(&f, &starts, t, 2, ids.device())
}

/// The ids of the tiny models: 0 pad, 1 sep, 2 eos, 3 unk, 4..10 words, 10..40 tune tokens;
/// for `CfgScope::Content`, ids 10..22 are "pitches" and 22..25 "keys" (positions 1..13
/// and 13..16 of the allowed ids); their structure is [`Toy`].
pub fn vocabulary() -> model::sampling::Vocabulary {
    model::sampling::Vocabulary {
        pad: 0,
        sep: 1,
        eos: 2,
        allowed: std::iter::once(2).chain(10..VOCAB as u32).collect(),
        content_groups: vec![(1..13).collect(), (13..16).collect()],
        structure: Some(std::sync::Arc::new(Toy)),
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
