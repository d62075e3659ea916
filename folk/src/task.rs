//! The text-to-tune task behind the method's [`Task`] boundary: prompts are captions of
//! the corpus' tunes, samples are tunes, the reward's embedder and the judge are the
//! checkpoints `qd embedder train` and `qd judge train` write, and samples are written
//! as ABC and MIDI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use model::fsutil::write_atomic;
use model::sampling::Vocabulary;
use model::task::{self, Prompt, Score, Split, Task};

use crate::dataset::Dataset;
use crate::embedder::{embed_tunes, load_embedder, TuneEmbedder};
use crate::judge::{load_judge, named, TuneJudge};
use crate::metrical::Metrical;
use crate::tune::Token;
use crate::vocab::{Vocab, EOS, PAD, SEP};
use crate::{midi, render};

/// What a policy trained on `vocab` may generate — its tune tokens and `<eos>` —, the
/// groups content-scoped guidance re-weighs within (the pitches, the keys, the meters) and
/// the structure policies may embed: where each token falls in its bar.
pub fn vocabulary(vocab: &Vocab) -> Vocabulary {
    let allowed: Vec<u32> = std::iter::once(EOS).chain(vocab.tune_ids()).collect();
    let kinds: [fn(&Token) -> bool; 3] = [
        |t| matches!(t, Token::Note(_)),
        |t| matches!(t, Token::Key(_)),
        |t| matches!(t, Token::Meter(_)),
    ];
    let content_groups = kinds
        .iter()
        .map(|is| {
            (0..allowed.len())
                .filter(|&i| {
                    vocab
                        .decode_tune(&allowed[i..=i])
                        .is_ok_and(|t| t.first().is_some_and(is))
                })
                .collect()
        })
        .collect();
    Vocabulary {
        pad: PAD,
        sep: SEP,
        eos: EOS,
        allowed,
        content_groups,
        structure: Some(Arc::new(Metrical::new(vocab))),
    }
}

/// The folk task: the prepared dataset and where its embedder and judge are.
#[derive(Debug)]
pub struct FolkTask {
    ds: Arc<Dataset>,
    vocabulary: Vocabulary,
    embedder: PathBuf,
    judge: PathBuf,
    /// Tempo of written MIDI files, in quarter notes per minute.
    qpm: u32,
}

impl FolkTask {
    /// The task over the dataset in `data` (`qd data prepare`), with the embedder and
    /// judge checkpoints at these paths (read only when asked for).
    pub fn open(data: &Path, embedder: &Path, judge: &Path) -> Result<FolkTask> {
        Ok(FolkTask::new(
            Dataset::load(data)?,
            embedder.to_path_buf(),
            judge.to_path_buf(),
        ))
    }

    pub fn new(ds: Dataset, embedder: PathBuf, judge: PathBuf) -> FolkTask {
        FolkTask {
            vocabulary: vocabulary(&ds.vocab),
            ds: Arc::new(ds),
            embedder,
            judge,
            qpm: 120,
        }
    }

    /// Sets the tempo of written MIDI files.
    pub fn with_qpm(mut self, qpm: u32) -> FolkTask {
        self.qpm = qpm;
        self
    }

    pub fn dataset(&self) -> &Dataset {
        &self.ds
    }
}

fn file_hash(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(Sha256::digest(bytes)))
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Task for FolkTask {
    fn name(&self) -> &str {
        "folk"
    }

    fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    fn vocab_size(&self) -> usize {
        self.ds.vocab.len()
    }

    fn vocab_hash(&self) -> String {
        self.ds.vocab.hash()
    }

    fn prompts(&self, split: Split) -> Vec<Prompt> {
        self.ds
            .split(split)
            .map(|r| Prompt {
                ids: r.prompt.clone(),
                reference: Some(r.tune.clone()),
                stratum: r.collection.clone(),
            })
            .collect()
    }

    fn embedder(&self, device: Device) -> Result<Box<dyn task::Embedder>> {
        let (vs, net) = load_embedder(&self.embedder, &self.ds.vocab, device)
            .context("loading the diversity embedder")?;
        Ok(Box::new(FolkEmbedder {
            _vs: vs,
            net,
            ds: self.ds.clone(),
        }))
    }

    fn judge(&self, device: Device) -> Result<Box<dyn task::Judge>> {
        let (vs, net) =
            load_judge(&self.judge, &self.ds.vocab, device).context("loading the judge")?;
        Ok(Box::new(FolkJudge {
            _vs: vs,
            net,
            ds: self.ds.clone(),
            named: Mutex::new(HashMap::new()),
        }))
    }

    fn write_sample(
        &self,
        title: &str,
        number: u32,
        sample: &[u32],
        stem: &Path,
    ) -> Result<task::Written> {
        let tokens = self.ds.vocab.decode_tune(sample)?;
        let abc = render::to_abc(&tokens, number, title);
        let abc_path = stem.with_extension("abc");
        write_atomic(&abc_path, abc.as_bytes())?;
        let mut written = task::Written {
            files: vec![abc_path],
            text: abc,
            note: None,
        };
        match midi::to_midi(&tokens, self.qpm) {
            Ok(mid) => {
                let path = stem.with_extension("mid");
                write_atomic(&path, &mid)?;
                written.files.push(path);
            }
            Err(e) => written.note = Some(format!("not well-formed enough for MIDI: {e}")),
        }
        Ok(written)
    }

    fn external_validity(&self, samples: &[&[u32]]) -> Result<Option<Vec<f64>>> {
        if !crate::abc2midi::available() {
            tracing::warn!(
                "abc2midi is not installed (`make setup` installs it): no outside bar check"
            );
            return Ok(None);
        }
        // A sample that does not decode has no bars to check.
        let tunes: Vec<Vec<Token>> = samples
            .iter()
            .map(|s| self.ds.vocab.decode_tune(s).unwrap_or_default())
            .collect();
        crate::abc2midi::bar_shares(&tunes).map(Some)
    }

    fn fingerprint(&self) -> Result<String> {
        let mut h = Sha256::new();
        h.update(self.ds.vocab.hash());
        for r in &self.ds.records {
            h.update(format!("{:?}|{}|", r.split, r.id));
            for id in r.prompt.iter().chain([&u32::MAX]).chain(&r.tune) {
                h.update(id.to_le_bytes());
            }
        }
        h.update(file_hash(&self.embedder)?);
        h.update(file_hash(&self.judge)?);
        Ok(hex(h.finalize()))
    }
}

/// The trained embedder over tune bodies.
#[derive(Debug)]
struct FolkEmbedder {
    _vs: VarStore,
    net: TuneEmbedder,
    ds: Arc<Dataset>,
}

impl task::Embedder for FolkEmbedder {
    fn dim(&self) -> i64 {
        self.net.dim
    }

    fn embed(&self, samples: &[&[u32]]) -> Tensor {
        embed_tunes(&self.net, &self.ds.vocab, samples)
    }
}

/// The judged attribute values each prompt of a split names, in prompt order.
type Named = Arc<Vec<Vec<(usize, String)>>>;

/// The trained judge, with the attribute values each prompt of a split names.
#[derive(Debug)]
struct FolkJudge {
    _vs: VarStore,
    net: TuneJudge,
    ds: Arc<Dataset>,
    named: Mutex<HashMap<Split, Named>>,
}

impl FolkJudge {
    fn named(&self, split: Split) -> Named {
        let mut cache = self.named.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(split)
            .or_insert_with(|| {
                Arc::new(
                    self.ds
                        .split(split)
                        .map(|r| named(&r.caption, &r.attributes))
                        .collect(),
                )
            })
            .clone()
    }
}

impl task::Judge for FolkJudge {
    fn scores(&self, split: Split, rows: &[(usize, &[u32])]) -> Result<Vec<Score>> {
        let named = self.named(split);
        let wanted = rows
            .iter()
            .map(|(p, _)| {
                named
                    .get(*p)
                    .cloned()
                    .with_context(|| format!("no {split:?} prompt {p}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let tunes: Vec<&[u32]> = rows
            .iter()
            .map(|(_, t)| t.strip_suffix(&[EOS]).unwrap_or(t))
            .collect();
        Ok(self.net.scores(&self.ds.vocab, &tunes, &wanted)?)
    }
}
