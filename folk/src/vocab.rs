//! The vocabulary: special tokens, prompt words and tune tokens in one id space, built
//! from the training split. Ids: `<pad>` 0, `<sep>` 1, `<eos>` 2, `<unk>` 3, then the
//! prompt words, then the tune tokens, each group by descending frequency.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use model::fnv::Fnv;

use super::caption::prompt_words;
use super::tune::Token;

pub const PAD: u32 = 0;
pub const SEP: u32 = 1;
pub const EOS: u32 = 2;
pub const UNK: u32 = 3;
pub const SPECIALS: [&str; 4] = ["<pad>", "<sep>", "<eos>", "<unk>"];

/// Errors decoding ids into tune tokens.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("id {0} is out of the vocabulary")]
    OutOfRange(u32),
    #[error("id {0} ({1}) is not a tune token")]
    NotTune(u32, String),
}

/// The vocabulary as stored in `vocab.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "VocabFile", into = "VocabFile")]
pub struct Vocab {
    words: Vec<String>,
    tunes: Vec<Token>,
    tune_text: Vec<String>,
    index: HashMap<String, u32>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabFile {
    words: Vec<String>,
    tunes: Vec<String>,
}

impl TryFrom<VocabFile> for Vocab {
    type Error = String;
    fn try_from(f: VocabFile) -> Result<Vocab, String> {
        let tunes = f
            .tunes
            .iter()
            .map(|t| t.parse::<Token>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Vocab::new(f.words, tunes)
    }
}

impl From<Vocab> for VocabFile {
    fn from(v: Vocab) -> VocabFile {
        VocabFile {
            words: v.words,
            tunes: v.tune_text,
        }
    }
}

/// Sorts items by descending count, then by text, for a deterministic order.
fn by_frequency<T: Clone + Ord>(counts: HashMap<T, usize>) -> Vec<T> {
    let mut v: Vec<(T, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter().map(|(t, _)| t).collect()
}

impl Vocab {
    /// A vocabulary from word and tune-token lists (no duplicates allowed).
    pub fn new(words: Vec<String>, tunes: Vec<Token>) -> Result<Vocab, String> {
        let tune_text: Vec<String> = tunes.iter().map(Token::to_string).collect();
        let mut index = HashMap::new();
        let names = SPECIALS.iter().map(|s| format!("special:{s}"));
        let names = names.chain(words.iter().map(|w| format!("word:{w}")));
        for (i, name) in names
            .chain(tune_text.iter().map(|t| format!("tune:{t}")))
            .enumerate()
        {
            if index.insert(name.clone(), i as u32).is_some() {
                return Err(format!("duplicate vocabulary entry {name}"));
            }
        }
        Ok(Vocab {
            words,
            tunes,
            tune_text,
            index,
        })
    }

    /// Builds the vocabulary from training prompts and tunes.
    pub fn build<'a>(
        prompts: impl IntoIterator<Item = &'a str>,
        tunes: impl IntoIterator<Item = &'a [Token]>,
    ) -> Vocab {
        let mut words: HashMap<String, usize> = HashMap::new();
        for p in prompts {
            for w in prompt_words(p) {
                *words.entry(w).or_default() += 1;
            }
        }
        let mut toks: HashMap<String, usize> = HashMap::new();
        for t in tunes {
            for tok in t {
                *toks.entry(tok.to_string()).or_default() += 1;
            }
        }
        let tunes = by_frequency(toks)
            .into_iter()
            .filter_map(|t| t.parse().ok())
            .collect();
        Vocab::new(by_frequency(words), tunes)
            .unwrap_or_else(|_| unreachable!("counts have unique keys"))
    }

    /// Total number of ids.
    pub fn len(&self) -> usize {
        SPECIALS.len() + self.words.len() + self.tunes.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn n_words(&self) -> usize {
        self.words.len()
    }

    pub fn n_tune_tokens(&self) -> usize {
        self.tunes.len()
    }

    /// The id range of tune tokens (what a model may generate, besides `<eos>`).
    pub fn tune_ids(&self) -> std::ops::Range<u32> {
        let start = (SPECIALS.len() + self.words.len()) as u32;
        start..start + self.tunes.len() as u32
    }

    /// Encodes a prompt; also returns the words that are not in the vocabulary (they map
    /// to `<unk>`).
    pub fn encode_prompt(&self, text: &str) -> (Vec<u32>, Vec<String>) {
        let mut unknown = Vec::new();
        let ids = prompt_words(text)
            .into_iter()
            .map(|w| {
                self.index
                    .get(&format!("word:{w}"))
                    .copied()
                    .unwrap_or_else(|| {
                        unknown.push(w);
                        UNK
                    })
            })
            .collect();
        (ids, unknown)
    }

    /// Encodes tune tokens; tokens not in the vocabulary map to `<unk>`.
    pub fn encode_tune(&self, tokens: &[Token]) -> Vec<u32> {
        tokens
            .iter()
            .map(|t| self.index.get(&format!("tune:{t}")).copied().unwrap_or(UNK))
            .collect()
    }

    /// Decodes ids up to the first `<eos>` into tune tokens, skipping `<pad>`.
    pub fn decode_tune(&self, ids: &[u32]) -> Result<Vec<Token>, DecodeError> {
        let range = self.tune_ids();
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            match id {
                EOS => break,
                PAD => {}
                id if range.contains(&id) => out.push(self.tunes[(id - range.start) as usize]),
                id if (id as usize) < self.len() => {
                    return Err(DecodeError::NotTune(id, self.text(id)))
                }
                id => return Err(DecodeError::OutOfRange(id)),
            }
        }
        Ok(out)
    }

    /// Each id's tune token (`None` for specials and prompt words), indexed by id.
    pub fn tokens_by_id(&self) -> Vec<Option<Token>> {
        let range = self.tune_ids();
        (0..self.len() as u32)
            .map(|id| {
                range
                    .contains(&id)
                    .then(|| self.tunes[(id - range.start) as usize])
            })
            .collect()
    }

    /// A tune's ids without its leading header tokens (`M:`, `K:`): what the embedder
    /// and the judge read.
    pub fn body<'a>(&self, ids: &'a [u32]) -> &'a [u32] {
        let range = self.tune_ids();
        let header = ids
            .iter()
            .take_while(|&&id| {
                range.contains(&id)
                    && matches!(
                        self.tunes[(id - range.start) as usize],
                        Token::Meter(_) | Token::Key(_)
                    )
            })
            .count();
        &ids[header..]
    }

    /// The text of any id (for logs).
    pub fn text(&self, id: u32) -> String {
        let i = id as usize;
        let w = SPECIALS.len();
        match i {
            i if i < w => SPECIALS[i].to_string(),
            i if i < w + self.words.len() => self.words[i - w].clone(),
            i if i < self.len() => self.tune_text[i - w - self.words.len()].clone(),
            _ => format!("<{id}?>"),
        }
    }

    /// A stable hash of the vocabulary (FNV-1a over its entries), stored in checkpoints.
    pub fn hash(&self) -> String {
        let mut h = Fnv::default();
        for s in SPECIALS
            .iter()
            .copied()
            .chain(self.words.iter().map(String::as_str))
        {
            h.write(s.as_bytes());
            h.write(&[0]);
        }
        h.write(&[1]);
        for t in &self.tune_text {
            h.write(t.as_bytes());
            h.write(&[0]);
        }
        format!("{:016x}", h.finish())
    }
}
