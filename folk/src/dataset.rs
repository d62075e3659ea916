//! The folk-tune dataset: reading the raw corpus, parsing, de-duplicating, splitting,
//! captioning and encoding it (`qd data prepare`), and loading it back.
//!
//! On disk, `data/folk/dataset.json` holds the vocabulary and every record (one atomic
//! write, so a reader never sees half a dataset) and `summary.json` the preparation
//! summary.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::abc::{parse_tune, parse_tune_in, split_tunes, Dialect, Skip};
use super::bars::check_bars;
use super::caption::{attributes, caption, Attributes};
use super::tune::{events, Token};
use super::vocab::{Fnv, Vocab};
use model::fsutil::write_atomic;

/// The corpus collections, as folders of `data/raw/`.
pub const COLLECTIONS: [&str; 5] = [
    "essenFolksong",
    "oneills1850",
    "ryansMammoth",
    "airdsAirs",
    "miscFolk",
];

/// How each collection writes ABC: the Chinese (`han*`) files of the Essen collection
/// leave the bar line at the end of each line implicit.
pub fn dialect(collection: &str, file: &str) -> Dialect {
    Dialect {
        line_ends_bar: collection == "essenFolksong" && file.starts_with("han"),
    }
}

/// The file format version of `dataset.json`.
const FORMAT: u32 = 1;

pub use model::task::Split;

/// The split of a tune from its content hash: about 90/5/5.
pub fn split_of_hash(h: u64) -> Split {
    match h % 100 {
        0..=89 => Split::Train,
        90..=94 => Split::Val,
        _ => Split::Test,
    }
}

/// One tune of the dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// `collection/file.abc#X`.
    pub id: String,
    pub collection: String,
    pub title: String,
    pub split: Split,
    pub caption: String,
    pub attributes: Attributes,
    /// The caption's word ids.
    pub prompt: Vec<u32>,
    /// The tune's token ids (`M:` `K:` body), without `<sep>` or `<eos>`.
    pub tune: Vec<u32>,
}

/// The prepared dataset.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    pub format: u32,
    pub seed: u64,
    pub vocab: Vocab,
    pub records: Vec<Record>,
}

impl Dataset {
    /// Loads `dir/dataset.json`.
    pub fn load(dir: &Path) -> Result<Dataset> {
        let path = dir.join("dataset.json");
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading {} (run `qd data prepare` first)", path.display()))?;
        let ds: Dataset = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a qd dataset", path.display()))?;
        if ds.format != FORMAT {
            bail!(
                "{} has format {}, this qd reads format {FORMAT}: run `qd data prepare` again",
                path.display(),
                ds.format
            );
        }
        let n = ds.vocab.len() as u32;
        if let Some(r) = ds
            .records
            .iter()
            .find(|r| r.prompt.iter().chain(&r.tune).any(|&id| id >= n))
        {
            bail!(
                "{}: record {} has ids outside the vocabulary",
                path.display(),
                r.id
            );
        }
        Ok(ds)
    }

    /// The training records; an error when there are none (nothing to train on).
    pub fn train_records(&self, dir: &Path) -> Result<Vec<&Record>> {
        let train: Vec<&Record> = self.split(Split::Train).collect();
        if train.is_empty() {
            bail!("the dataset in {} has no training tunes", dir.display());
        }
        Ok(train)
    }

    pub fn split(&self, split: Split) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(move |r| r.split == split)
    }
}

/// Settings of `qd data prepare`.
#[derive(Clone, Debug)]
pub struct PrepareConfig {
    /// Folder holding one sub-folder of `.abc` files per collection.
    pub raw: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Seeds the split and the captions.
    pub seed: u64,
    /// Tunes with more tokens are left out.
    pub max_tokens: usize,
}

/// What `qd data prepare` found and did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Tunes found (an `X:` line each), in all and per collection.
    pub found: usize,
    pub parsed: usize,
    /// Reason → tunes skipped by the parser.
    pub skipped: BTreeMap<String, usize>,
    pub collections: BTreeMap<String, CollectionCounts>,
    /// Parsed tunes identical to an earlier one, dropped.
    pub duplicates: usize,
    /// Parsed tunes longer than `max_tokens`, dropped.
    pub too_long: usize,
    /// Tunes in the dataset, per split.
    pub kept: usize,
    pub splits: BTreeMap<String, usize>,
    /// Percentiles (p5, p25, p50, p75, p95, max) of tune length in tokens.
    pub token_percentiles: BTreeMap<String, usize>,
    pub vocab: VocabSizes,
    /// Attribute → class → tunes.
    pub attributes: BTreeMap<String, BTreeMap<String, usize>>,
    /// Share of complete bars whose length fits the meter, over the kept tunes.
    pub bars_fit: f64,
    /// Unknown (`<unk>`) tune tokens in the validation and test splits.
    pub unk_tokens: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CollectionCounts {
    pub found: usize,
    pub parsed: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VocabSizes {
    pub words: usize,
    pub tune_tokens: usize,
    pub total: usize,
}

/// Reads a corpus file as text: UTF-8, or Latin-1 where it is not valid UTF-8 (the Essen
/// files are Latin-1).
fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    })
}

/// A parsed tune before splitting.
struct Candidate {
    id: String,
    collection: &'static str,
    title: String,
    attributes: Attributes,
    tokens: Vec<Token>,
    hash: u64,
}

/// Hash of a tune's tokens, mixed with the seed: decides the split and seeds its caption.
fn tune_hash(seed: u64, tokens: &[Token]) -> u64 {
    let mut h = Fnv::default();
    h.write(&seed.to_le_bytes());
    for t in tokens {
        h.write(t.to_string().as_bytes());
        h.write(b" ");
    }
    h.finish()
}

fn percentile(sorted: &[usize], p: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Parses the raw corpus and writes the dataset. Missing collections are an error (run
/// `make setup`).
pub fn prepare(cfg: &PrepareConfig) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut candidates = Vec::new();
    let mut seen = HashSet::new();
    for collection in COLLECTIONS {
        let dir = cfg.raw.join(collection);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| {
                format!(
                    "reading {} (run `make setup` to fetch the corpus)",
                    dir.display()
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "abc"))
            .collect();
        files.sort();
        let counts = summary
            .collections
            .entry(collection.to_string())
            .or_default();
        for path in files {
            let text = read_text(&path)?;
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            for (k, chunk) in split_tunes(&text).into_iter().enumerate() {
                counts.found += 1;
                let parsed = match parse_tune_in(chunk, dialect(collection, &file)) {
                    Ok(p) => p,
                    Err(reason) => {
                        *summary.skipped.entry(reason.to_string()).or_default() += 1;
                        continue;
                    }
                };
                counts.parsed += 1;
                let hash = tune_hash(cfg.seed, &parsed.tokens);
                if !seen.insert(tune_hash(0, &parsed.tokens)) {
                    summary.duplicates += 1;
                    continue;
                }
                if parsed.tokens.len() > cfg.max_tokens {
                    summary.too_long += 1;
                    continue;
                }
                let number = parsed
                    .meta
                    .number
                    .map_or_else(|| format!("{}", k + 1), |n| n.to_string());
                candidates.push(Candidate {
                    id: format!("{collection}/{file}#{number}"),
                    collection,
                    title: parsed.meta.titles.first().cloned().unwrap_or_default(),
                    attributes: attributes(
                        collection,
                        &file,
                        &parsed.meta,
                        parsed.key,
                        parsed.meter,
                    ),
                    tokens: parsed.tokens,
                    hash,
                });
            }
        }
    }
    summary.found = summary.collections.values().map(|c| c.found).sum();
    summary.parsed = summary.collections.values().map(|c| c.parsed).sum();

    let captions: Vec<String> = candidates
        .iter()
        .map(|c| {
            caption(
                &c.attributes,
                &mut rand::rngs::StdRng::seed_from_u64(c.hash),
            )
        })
        .collect();
    let splits: Vec<Split> = candidates.iter().map(|c| split_of_hash(c.hash)).collect();
    let train = || (0..candidates.len()).filter(|&i| splits[i] == Split::Train);
    let vocab = Vocab::build(
        train().map(|i| captions[i].as_str()),
        train().map(|i| candidates[i].tokens.as_slice()),
    );

    let mut records = Vec::with_capacity(candidates.len());
    let mut lengths = Vec::with_capacity(candidates.len());
    let (mut complete, mut fitting) = (0usize, 0usize);
    for ((c, caption), split) in candidates.into_iter().zip(captions).zip(splits) {
        let tune = vocab.encode_tune(&c.tokens);
        if split != Split::Train {
            summary.unk_tokens += tune.iter().filter(|&&id| id == super::vocab::UNK).count();
        }
        if let (Ok(ev), Some(Token::Meter(m))) = (events(&c.tokens), c.tokens.first()) {
            let report = check_bars(&ev, *m);
            complete += report.complete();
            fitting += report.fitting();
        }
        lengths.push(c.tokens.len());
        *summary
            .splits
            .entry(format!("{split:?}").to_lowercase())
            .or_default() += 1;
        let a = &c.attributes;
        let unknown = || "unknown".to_string();
        for (name, value) in [
            ("genre", a.genre.clone().unwrap_or_else(unknown)),
            ("origin", a.origin.clone().unwrap_or_else(unknown)),
            ("tempo", a.tempo.clone().unwrap_or_else(unknown)),
            ("mode", a.mode.clone()),
            ("key", a.key.clone()),
            ("meter", a.meter.clone()),
        ] {
            *summary
                .attributes
                .entry(name.to_string())
                .or_default()
                .entry(value)
                .or_default() += 1;
        }
        records.push(Record {
            id: c.id,
            collection: c.collection.to_string(),
            title: c.title,
            split,
            prompt: vocab.encode_prompt(&caption).0,
            caption,
            attributes: c.attributes,
            tune,
        });
    }
    lengths.sort_unstable();
    for (name, p) in [
        ("p5", 0.05),
        ("p25", 0.25),
        ("p50", 0.5),
        ("p75", 0.75),
        ("p95", 0.95),
        ("max", 1.0),
    ] {
        summary
            .token_percentiles
            .insert(name.to_string(), percentile(&lengths, p));
    }
    summary.kept = records.len();
    summary.bars_fit = if complete == 0 {
        0.0
    } else {
        fitting as f64 / complete as f64
    };
    summary.vocab = VocabSizes {
        words: vocab.n_words(),
        tune_tokens: vocab.n_tune_tokens(),
        total: vocab.len(),
    };

    let dataset = Dataset {
        format: FORMAT,
        seed: cfg.seed,
        vocab,
        records,
    };
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    write_atomic(
        &cfg.out.join("dataset.json"),
        &serde_json::to_vec(&dataset)?,
    )?;
    write_atomic(
        &cfg.out.join("summary.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    Ok(summary)
}

impl Summary {
    /// The summary as a text table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let pct = |a: usize, b: usize| {
            if b == 0 {
                0.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        let _ = writeln!(
            s,
            "{:<16} {:>7} {:>7} {:>7}",
            "collection", "found", "parsed", "%"
        );
        for (name, c) in &self.collections {
            let _ = writeln!(
                s,
                "{name:<16} {:>7} {:>7} {:>6.1}%",
                c.found,
                c.parsed,
                pct(c.parsed, c.found)
            );
        }
        let _ = writeln!(
            s,
            "{:<16} {:>7} {:>7} {:>6.1}%",
            "total",
            self.found,
            self.parsed,
            pct(self.parsed, self.found)
        );
        let _ = writeln!(s, "\nskipped by reason");
        let mut reasons: Vec<_> = self.skipped.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        for (r, n) in reasons {
            let _ = writeln!(s, "  {r:<44} {n:>6}");
        }
        let _ = writeln!(
            s,
            "\nduplicates dropped {}, too long dropped {}",
            self.duplicates, self.too_long
        );
        let splits: Vec<String> = self
            .splits
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(s, "kept {} ({})", self.kept, splits.join(", "));
        let p: Vec<String> = ["p5", "p25", "p50", "p75", "p95", "max"]
            .iter()
            .map(|k| {
                format!(
                    "{k} {}",
                    self.token_percentiles.get(*k).copied().unwrap_or(0)
                )
            })
            .collect();
        let _ = writeln!(s, "tokens per tune: {}", p.join(", "));
        let _ = writeln!(
            s,
            "vocabulary: {} prompt words + {} tune tokens + 4 specials = {}",
            self.vocab.words, self.vocab.tune_tokens, self.vocab.total
        );
        let _ = writeln!(s, "unknown tune tokens in val+test: {}", self.unk_tokens);
        let _ = writeln!(
            s,
            "complete bars that fit the meter: {:.1}%",
            100.0 * self.bars_fit
        );
        for (name, classes) in &self.attributes {
            let mut v: Vec<_> = classes.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let shown: Vec<String> = v.iter().take(12).map(|(k, n)| format!("{k} {n}")).collect();
            let more = if v.len() > 12 {
                format!(", … ({} classes)", v.len())
            } else {
                String::new()
            };
            let _ = writeln!(s, "{name:<7} {}{more}", shown.join(", "));
        }
        s
    }
}

/// Parses one tune of ABC text to tokens (the first tune of the text).
pub fn parse_first(text: &str) -> Result<Vec<Token>, Skip> {
    let chunk = split_tunes(text).into_iter().next().unwrap_or(text);
    parse_tune(chunk).map(|p| p.tokens)
}
