//! Explicit position tokens in the style of REMI (Huang & Yang 2020), the alternative to
//! the metrical embedding (`crate::metrical`) that `make curve` measures it against: before
//! every note or rest, a token naming its onset in the bar (in quarters of an eighth, as
//! the metrical position counts), which the model reads and writes like any other token.
//! [`Remi`] maps a tune's ids to this encoding and back; [`RemiTask`] is the folk task over
//! it (`qd pretrain --remi`, `qd eval --remi`): its policies generate position tokens,
//! which are dropped before the judge, the embedder, abc2midi or a file sees a sample.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use tch::{Device, Tensor};

use model::sampling::Vocabulary;
use model::task::{self, Prompt, Score, Split, Task, Written};

use crate::metrical::{State, CAP};
use crate::tune::Token;
use crate::vocab::Vocab;
use crate::FolkTask;

/// Position tokens: onsets 0 to [`CAP`] quarters of an eighth.
pub const POSITIONS: u32 = CAP as u32 + 1;

/// The REMI encoding over a vocabulary: position ids follow the vocabulary's own.
#[derive(Clone, Debug)]
pub struct Remi {
    /// The first position id (the vocabulary's size).
    first: u32,
    /// Each id's tune token.
    tokens: Arc<Vec<Option<Token>>>,
}

impl Remi {
    pub fn new(vocab: &Vocab) -> Remi {
        Remi {
            first: vocab.len() as u32,
            tokens: Arc::new(vocab.tokens_by_id()),
        }
    }

    /// Ids of the encoding: the vocabulary's and the position tokens.
    pub fn vocab_size(&self) -> usize {
        (self.first + POSITIONS) as usize
    }

    /// The vocabulary hash of the encoding.
    pub fn vocab_hash(vocab: &Vocab) -> String {
        format!("{}-remi", vocab.hash())
    }

    pub fn is_position(&self, id: u32) -> bool {
        (self.first..self.first + POSITIONS).contains(&id)
    }

    /// A tune's ids with the position token before every note and rest.
    pub fn encode(&self, tune: &[u32]) -> Vec<u32> {
        let mut state = State::default();
        let mut out = Vec::with_capacity(tune.len() * 3 / 2);
        for &id in tune {
            let token = self.tokens.get(id as usize).copied().flatten();
            if let Some(Token::Note(_) | Token::Rest) = token {
                out.push(self.first + State::quanta(state.next_onset()) as u32);
            }
            state.read(token);
            out.push(id);
        }
        out
    }

    /// A sample's ids without its position tokens.
    pub fn strip(&self, ids: &[u32]) -> Vec<u32> {
        ids.iter()
            .copied()
            .filter(|&id| !self.is_position(id))
            .collect()
    }
}

/// The folk task over the REMI encoding: prompts, judge, embedder and files are the folk
/// task's, on samples with their position tokens dropped.
#[derive(Debug)]
pub struct RemiTask {
    inner: FolkTask,
    remi: Remi,
    vocabulary: Vocabulary,
}

impl RemiTask {
    pub fn new(inner: FolkTask) -> RemiTask {
        let vocab = &inner.dataset().vocab;
        RemiTask {
            remi: Remi::new(vocab),
            vocabulary: RemiTask::vocabulary_of(vocab),
            inner,
        }
    }

    /// The folk task's vocabulary with the position tokens among the ids a sample may
    /// hold, and no metrical embedding.
    pub fn vocabulary_of(vocab: &Vocab) -> Vocabulary {
        let first = vocab.len() as u32;
        let mut vocabulary = crate::task::vocabulary(vocab);
        vocabulary.allowed.extend(first..first + POSITIONS);
        vocabulary.structure = None;
        vocabulary
    }

    pub fn remi(&self) -> &Remi {
        &self.remi
    }

    fn strip_all(&self, samples: &[&[u32]]) -> Vec<Vec<u32>> {
        samples.iter().map(|s| self.remi.strip(s)).collect()
    }
}

impl Task for RemiTask {
    fn name(&self) -> &str {
        "folk-remi"
    }

    fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    fn vocab_size(&self) -> usize {
        self.remi.vocab_size()
    }

    fn vocab_hash(&self) -> String {
        Remi::vocab_hash(&self.inner.dataset().vocab)
    }

    fn prompts(&self, split: Split) -> Vec<Prompt> {
        self.inner.prompts(split)
    }

    fn embedder(&self, device: Device) -> Result<Box<dyn task::Embedder>> {
        Ok(Box::new(StrippedEmbedder {
            inner: self.inner.embedder(device)?,
            remi: self.remi.clone(),
        }))
    }

    fn judge(&self, device: Device) -> Result<Box<dyn task::Judge>> {
        Ok(Box::new(StrippedJudge {
            inner: self.inner.judge(device)?,
            remi: self.remi.clone(),
        }))
    }

    fn external_validity(&self, samples: &[&[u32]]) -> Result<Option<Vec<f64>>> {
        let stripped = self.strip_all(samples);
        let refs: Vec<&[u32]> = stripped.iter().map(Vec::as_slice).collect();
        self.inner.external_validity(&refs)
    }

    fn write_sample(
        &self,
        title: &str,
        number: u32,
        sample: &[u32],
        stem: &Path,
    ) -> Result<Written> {
        self.inner
            .write_sample(title, number, &self.remi.strip(sample), stem)
    }

    fn fingerprint(&self) -> Result<String> {
        Ok(format!("{}-remi", self.inner.fingerprint()?))
    }
}

/// The folk task's embedder, reading samples without their position tokens.
#[derive(Debug)]
struct StrippedEmbedder {
    inner: Box<dyn task::Embedder>,
    remi: Remi,
}

impl task::Embedder for StrippedEmbedder {
    fn dim(&self) -> i64 {
        self.inner.dim()
    }

    fn embed(&self, samples: &[&[u32]]) -> Tensor {
        let stripped: Vec<Vec<u32>> = samples.iter().map(|s| self.remi.strip(s)).collect();
        let refs: Vec<&[u32]> = stripped.iter().map(Vec::as_slice).collect();
        self.inner.embed(&refs)
    }
}

/// The folk task's judge, reading samples without their position tokens.
#[derive(Debug)]
struct StrippedJudge {
    inner: Box<dyn task::Judge>,
    remi: Remi,
}

impl task::Judge for StrippedJudge {
    fn scores(&self, split: Split, rows: &[(usize, &[u32])]) -> Result<Vec<Score>> {
        let stripped: Vec<(usize, Vec<u32>)> =
            rows.iter().map(|(p, s)| (*p, self.remi.strip(s))).collect();
        let refs: Vec<(usize, &[u32])> = stripped.iter().map(|(p, s)| (*p, s.as_slice())).collect();
        self.inner.scores(split, &refs)
    }
}
