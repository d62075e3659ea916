//! A second task, tiny and synthetic, that goes through the same actor and learner as
//! the folk task: it shows that the method depends on the [`Task`] boundary only.
//!
//! Prompts are one word each, `<a>` … `<d>`; outputs are strings over eight symbols
//! `s0` … `s7`. Prompt `k` asks for symbol `k` (its reference output repeats it). The
//! embedder is a fixed, untrained one: the normalised histogram of a sample's symbols,
//! so two samples with the same symbols have reward 0 and two with disjoint symbols 1.
//! The judge's adherence is the share of a sample's symbols that are its prompt's; its
//! validity is 1 for a sample that ended within [`MAX_LEN`] symbols and 0 otherwise.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use model::sampling::Vocabulary;
use model::task::{self, Prompt, Score, Split, Task};
use tch::{Device, Tensor};

pub const PAD: u32 = 0;
pub const SEP: u32 = 1;
pub const EOS: u32 = 2;
/// The first prompt word; prompts are `FIRST_WORD + k` for `k < PROMPTS`.
pub const FIRST_WORD: u32 = 3;
pub const PROMPTS: u32 = 4;
/// The first symbol; symbols are `FIRST_SYMBOL + k` for `k < SYMBOLS`.
pub const FIRST_SYMBOL: u32 = FIRST_WORD + PROMPTS;
pub const SYMBOLS: u32 = 8;
/// Ids in all.
pub const VOCAB: usize = (FIRST_SYMBOL + SYMBOLS) as usize;
/// Longest valid sample.
pub const MAX_LEN: usize = 8;

/// The synthetic task.
#[derive(Debug)]
pub struct SyntheticTask {
    vocabulary: Vocabulary,
}

impl Default for SyntheticTask {
    fn default() -> SyntheticTask {
        SyntheticTask {
            vocabulary: Vocabulary {
                pad: PAD,
                sep: SEP,
                eos: EOS,
                allowed: std::iter::once(EOS)
                    .chain(FIRST_SYMBOL..FIRST_SYMBOL + SYMBOLS)
                    .collect(),
                // Content-scoped guidance re-weighs among the first four symbols.
                content_groups: vec![(1..5).collect()],
                structure: None,
            },
        }
    }
}

fn symbol_of_prompt(prompt: &[u32]) -> Option<u32> {
    match prompt {
        [w] if (FIRST_WORD..FIRST_WORD + PROMPTS).contains(w) => {
            Some(FIRST_SYMBOL + w - FIRST_WORD)
        }
        _ => None,
    }
}

impl Task for SyntheticTask {
    fn name(&self) -> &str {
        "synthetic"
    }

    fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    fn vocab_size(&self) -> usize {
        VOCAB
    }

    fn vocab_hash(&self) -> String {
        format!("synthetic-{VOCAB}")
    }

    fn prompts(&self, _split: Split) -> Vec<Prompt> {
        (0..PROMPTS)
            .map(|k| Prompt {
                ids: vec![FIRST_WORD + k],
                reference: Some(vec![FIRST_SYMBOL + k; 4]),
                // Two strata, so that evaluation's stratified draw has something to do.
                stratum: if k % 2 == 0 { "even" } else { "odd" }.into(),
            })
            .collect()
    }

    fn embedder(&self, _device: Device) -> Result<Box<dyn task::Embedder>> {
        Ok(Box::new(Histogram))
    }

    fn judge(&self, _device: Device) -> Result<Box<dyn task::Judge>> {
        Ok(Box::new(SymbolJudge {
            prompts: self.prompts(Split::Test),
        }))
    }

    fn write_sample(
        &self,
        title: &str,
        number: u32,
        sample: &[u32],
        stem: &Path,
    ) -> Result<task::Written> {
        let text: Vec<String> = sample
            .iter()
            .map(|&id| match id {
                EOS => "<eos>".to_string(),
                s => format!("s{}", s.saturating_sub(FIRST_SYMBOL)),
            })
            .collect();
        let text = format!("{number}. {title}: {}\n", text.join(" "));
        let path = stem.with_extension("txt");
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        Ok(task::Written {
            files: vec![path],
            text,
            note: None,
        })
    }

    fn fingerprint(&self) -> Result<String> {
        Ok(self.vocab_hash())
    }
}

/// Writes a random `tiny` base policy (seeded) for the synthetic vocabulary to `path`.
pub fn base_policy(path: &Path, task: &dyn Task) -> Result<()> {
    tch::manual_seed(3);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let config = model::config::Preset::Tiny.config(VOCAB);
    let _model = model::transformer::Transformer::new(&vs.root(), &config);
    let stamp = model::checkpoint::Stamp {
        kind: model::checkpoint::ModelKind::Policy,
        config: &config,
        vocab_hash: &task.vocab_hash(),
        step: 0,
        version: 0,
        extra: serde_json::Value::Null,
    };
    model::checkpoint::save(path, &vs, None, stamp)?;
    Ok(())
}

/// The normalised histogram of a sample's symbols (uniform for a sample without any).
#[derive(Debug)]
pub struct Histogram;

impl task::Embedder for Histogram {
    fn dim(&self) -> i64 {
        i64::from(SYMBOLS)
    }

    fn embed(&self, samples: &[&[u32]]) -> Tensor {
        let mut counts = vec![0f32; samples.len() * SYMBOLS as usize];
        for (i, s) in samples.iter().enumerate() {
            let row = &mut counts[i * SYMBOLS as usize..(i + 1) * SYMBOLS as usize];
            for &id in s.iter().filter(|&&id| id >= FIRST_SYMBOL) {
                row[(id - FIRST_SYMBOL) as usize] += 1.0;
            }
            if row.iter().all(|&c| c == 0.0) {
                row.iter_mut().for_each(|c| *c = 1.0);
            }
        }
        let z = Tensor::from_slice(&counts).view([samples.len() as i64, i64::from(SYMBOLS)]);
        &z / z.norm_scalaropt_dim(2, [1], true).clamp_min(1e-8)
    }
}

/// Adherence: the share of the prompt's symbol; validity: ended within [`MAX_LEN`].
#[derive(Debug)]
pub struct SymbolJudge {
    prompts: Vec<Prompt>,
}

impl task::Judge for SymbolJudge {
    fn scores(&self, _split: Split, rows: &[(usize, &[u32])]) -> Result<Vec<Score>> {
        rows.iter()
            .map(|&(p, sample)| {
                let prompt = self
                    .prompts
                    .get(p)
                    .with_context(|| format!("no prompt {p}"))?;
                let want = symbol_of_prompt(&prompt.ids).context("not a synthetic prompt")?;
                let symbols: Vec<u32> = sample.iter().copied().filter(|&id| id != EOS).collect();
                ensure!(
                    symbols
                        .iter()
                        .all(|id| (FIRST_SYMBOL..FIRST_SYMBOL + SYMBOLS).contains(id)),
                    "a sample holds ids that are not symbols"
                );
                let adherence = if symbols.is_empty() {
                    0.0
                } else {
                    symbols.iter().filter(|&&id| id == want).count() as f64 / symbols.len() as f64
                };
                Ok(Score {
                    adherence,
                    validity: if symbols.len() <= MAX_LEN { 1.0 } else { 0.0 },
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::task::pair_rewards;

    #[test]
    fn the_embedder_rewards_different_symbols() {
        let e = Histogram;
        let r = pair_rewards(&e, &[(&[7, 7, 2], &[7, 7]), (&[7, 8], &[9, 10])]).unwrap();
        assert!(r[0].abs() < 1e-6, "{r:?}");
        assert!((r[1] - 1.0).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn the_judge_scores_the_prompts_symbol() {
        let task = SyntheticTask::default();
        let j = task.judge(Device::Cpu).unwrap();
        let s = j
            .scores(Split::Test, &[(1, &[8, 8, 9, 2]), (0, &[8])])
            .unwrap();
        assert!((s[0].adherence - 2.0 / 3.0).abs() < 1e-12 && s[0].validity == 1.0);
        assert_eq!(s[1].adherence, 0.0);
        assert!(j.scores(Split::Test, &[(9, &[8])]).is_err());
    }
}
