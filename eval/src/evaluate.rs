//! `qd eval`: k samples for each held-out test prompt; quality (the judge), embedding
//! diversity (mean `1 − cos` between samples of the same prompt, the paper's metric),
//! edit diversity (normalised Levenshtein between the same pairs, which gaming the
//! embedder cannot move), the same two across different prompts (the upper bound), and
//! generation speed. Prompts and seeds are fixed, so numbers from different calls compare.
//!
//! Every mean comes with its 95% interval (bootstrap over prompts), and the report keeps
//! the per-prompt values, so that two reports on the same prompts and seeds can be
//! compared with a paired interval (`crate::stats::paired_difference`).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use anyhow::{ensure, Result};

use crate::stats::{mean, mean_interval, Interval};
use model::sampling::{sample, SamplingConfig};
use model::task::{pair_diversity, Embedder, Judge, Split, Task};
use model::transformer::Transformer;

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// Samples per prompt (at least 2).
    pub k: usize,
    /// Test prompts used (the first ones of the split; `None`: all).
    pub prompts: Option<usize>,
    /// Rows per sampling batch.
    pub batch: usize,
    pub sampling: SamplingConfig,
    pub seed: u64,
    /// A progress bar over the samples drawn.
    pub progress: bool,
}

/// The numbers `qd eval` reports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    pub prompts: usize,
    pub samples: usize,
    pub quality: f64,
    /// The two factors of quality, averaged: prompt adherence and validity (in the folk
    /// task, bar validity).
    pub adherence: f64,
    #[serde(alias = "bar_validity")]
    pub validity: f64,
    /// The judge's quality of the task's reference outputs (the real held-out tunes) for
    /// their own prompts: what a perfect policy would score (NaN without references).
    pub quality_of_real_tunes: f64,
    pub embed_diversity: f64,
    pub edit_diversity: f64,
    pub embed_diversity_across: f64,
    pub edit_diversity_across: f64,
    /// Generated tokens per second of sampling.
    pub tokens_per_s: f64,
    pub mean_length: f64,
    /// Share of samples that ended with `<eos>` within the token budget.
    pub finished: f64,
    /// 95% intervals of the means above (bootstrap over prompts).
    pub intervals: Intervals,
    /// The per-prompt values the means and intervals are made of.
    pub per_prompt: PerPrompt,
}

/// Prompt `i`'s value of each metric: the mean over its samples (quality and its
/// factors) or over its pairs of samples (diversity). The report's means are their means.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PerPrompt {
    pub quality: Vec<f64>,
    pub adherence: Vec<f64>,
    pub validity: Vec<f64>,
    pub embed_diversity: Vec<f64>,
    pub edit_diversity: Vec<f64>,
}

/// 95% intervals of a report's means.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Intervals {
    pub quality: Interval,
    pub adherence: Interval,
    pub validity: Interval,
    pub embed_diversity: Interval,
    pub edit_diversity: Interval,
}

impl PerPrompt {
    /// The intervals of the means of these values.
    pub fn intervals(&self) -> Intervals {
        Intervals {
            quality: mean_interval(&self.quality),
            adherence: mean_interval(&self.adherence),
            validity: mean_interval(&self.validity),
            embed_diversity: mean_interval(&self.embed_diversity),
            edit_diversity: mean_interval(&self.edit_diversity),
        }
    }
}

/// The means of consecutive groups of `size` values.
fn group_means(values: &[f64], size: usize) -> Vec<f64> {
    values.chunks(size.max(1)).map(mean).collect()
}

/// Levenshtein distance divided by the longer length (0 for two empty sequences).
pub fn edit_distance(a: &[u32], b: &[u32]) -> f64 {
    let longer = a.len().max(b.len());
    if longer == 0 {
        return 0.0;
    }
    // (strsim takes sized collections: the copies are small next to the O(n·m) table.)
    strsim::generic_levenshtein(&a.to_vec(), &b.to_vec()) as f64 / longer as f64
}

/// Evaluates a policy on the task's test prompts.
pub fn evaluate(
    policy: &Transformer,
    task: &dyn Task,
    embedder: &dyn Embedder,
    judge: &dyn Judge,
    cfg: &EvalConfig,
) -> Result<EvalReport> {
    let prompts: Vec<_> = task
        .prompts(Split::Test)
        .into_iter()
        .take(cfg.prompts.unwrap_or(usize::MAX))
        .collect();
    ensure!(!prompts.is_empty(), "the task has no test prompts");
    let k = cfg.k.max(2);
    let v = task.vocabulary();
    // Row r is sample r % k of prompt r / k, seeded by (seed, r).
    let rows: Vec<(usize, u64)> = (0..prompts.len() * k)
        .map(|r| {
            (
                r / k,
                cfg.seed.wrapping_mul(1_000_003).wrapping_add(r as u64),
            )
        })
        .collect();
    let mut tokens: Vec<Vec<u32>> = Vec::with_capacity(rows.len());
    let start = Instant::now();
    let bar = model::train::progress_bar(cfg.progress, rows.len() as u64, 0);
    if let Some(b) = &bar {
        b.set_message("samples");
    }
    for chunk in rows.chunks(cfg.batch.max(1)) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|(p, _)| prompts[*p].ids.clone()).collect();
        let seeds: Vec<u64> = chunk.iter().map(|(_, s)| *s).collect();
        tokens.extend(sample(policy, &ids, &seeds, v, &cfg.sampling)?.tokens);
        if let Some(b) = &bar {
            b.inc(chunk.len() as u64);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let seconds = start.elapsed().as_secs_f64();
    let generated: usize = tokens.iter().map(Vec::len).sum();
    let finished = tokens.iter().filter(|t| t.last() == Some(&v.eos)).count() as f64
        / tokens.len().max(1) as f64;
    let tunes: Vec<Vec<u32>> = tokens
        .iter()
        .map(|t| t.iter().copied().filter(|&x| x != v.eos).collect())
        .collect();

    let references: Vec<(usize, &[u32])> = prompts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.reference.as_deref().map(|r| (i, r)))
        .collect();
    let quality_of_real_tunes = mean(
        &judge
            .scores(Split::Test, &references)?
            .iter()
            .map(|s| s.quality())
            .collect::<Vec<_>>(),
    );
    let mut scores = Vec::with_capacity(tunes.len());
    let mut z = Vec::new();
    for (i, chunk) in tunes.chunks(256).enumerate() {
        let judged: Vec<(usize, &[u32])> = chunk
            .iter()
            .enumerate()
            .map(|(j, t)| (rows[i * 256 + j].0, t.as_slice()))
            .collect();
        scores.extend(judge.scores(Split::Test, &judged)?);
        let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
        z.push(tch::no_grad(|| embedder.embed(&refs)));
    }
    let z = Tensor::cat(&z, 0);

    // Pairs within a prompt, and the same number of pairs across neighbouring prompts.
    let n = prompts.len();
    let (mut within, mut across) = (Vec::new(), Vec::new());
    for p in 0..n {
        for a in 0..k {
            for b in a + 1..k {
                within.push((p * k + a, p * k + b));
                if n > 1 {
                    across.push((p * k + a, ((p + 1) % n) * k + b));
                }
            }
        }
    }
    let embed_div = |pairs: &[(usize, usize)]| -> Result<Vec<f64>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let idx = |f: fn(&(usize, usize)) -> usize| {
            Tensor::from_slice(&pairs.iter().map(|p| f(p) as i64).collect::<Vec<_>>())
                .to_device(z.device())
        };
        pair_diversity(
            &z.index_select(0, &idx(|p| p.0)),
            &z.index_select(0, &idx(|p| p.1)),
        )
    };
    let edit_div = |pairs: &[(usize, usize)]| -> Vec<f64> {
        pairs
            .iter()
            .map(|&(a, b)| edit_distance(&tunes[a], &tunes[b]))
            .collect()
    };
    // Samples and pairs come grouped by prompt: k samples, k(k−1)/2 pairs each.
    let pairs = k * (k - 1) / 2;
    let per_prompt = PerPrompt {
        quality: group_means(&scores.iter().map(|s| s.quality()).collect::<Vec<_>>(), k),
        adherence: group_means(&scores.iter().map(|s| s.adherence).collect::<Vec<_>>(), k),
        validity: group_means(&scores.iter().map(|s| s.validity).collect::<Vec<_>>(), k),
        embed_diversity: group_means(&embed_div(&within)?, pairs),
        edit_diversity: group_means(&edit_div(&within), pairs),
    };
    Ok(EvalReport {
        prompts: n,
        samples: tunes.len(),
        quality: mean(&per_prompt.quality),
        adherence: mean(&per_prompt.adherence),
        validity: mean(&per_prompt.validity),
        quality_of_real_tunes,
        embed_diversity: mean(&per_prompt.embed_diversity),
        edit_diversity: mean(&per_prompt.edit_diversity),
        embed_diversity_across: mean(&embed_div(&across)?),
        edit_diversity_across: mean(&edit_div(&across)),
        tokens_per_s: generated as f64 / seconds.max(1e-9),
        mean_length: generated as f64 / tokens.len().max(1) as f64,
        finished,
        intervals: per_prompt.intervals(),
        per_prompt,
    })
}

impl EvalReport {
    /// The report as a table.
    pub fn table(&self) -> String {
        format!(
            "prompts {} × {} samples (95% intervals: bootstrap over prompts)\n\
             quality                 {:.4} {}   (real held-out tunes {:.4})\n\
             = adherence × validity  {:.4} {} × {:.4} {} (means)\n\
             embedding diversity     {:.4} {}   (across prompts {:.4})\n\
             edit diversity          {:.4} {}   (across prompts {:.4})\n\
             mean length             {:.1} tokens, {:.1}% ended with <eos>\n\
             generation              {:.0} tokens/s\n",
            self.prompts,
            self.samples / self.prompts.max(1),
            self.quality,
            self.intervals.quality.text(4),
            self.quality_of_real_tunes,
            self.adherence,
            self.intervals.adherence.text(3),
            self.validity,
            self.intervals.validity.text(3),
            self.embed_diversity,
            self.intervals.embed_diversity.text(4),
            self.embed_diversity_across,
            self.edit_diversity,
            self.intervals.edit_diversity.text(4),
            self.edit_diversity_across,
            self.mean_length,
            100.0 * self.finished,
            self.tokens_per_s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn normalised_levenshtein() {
        assert_eq!(edit_distance(&[], &[]), 0.0);
        assert_eq!(edit_distance(&[1, 2, 3], &[1, 2, 3]), 0.0);
        assert_eq!(edit_distance(&[1, 2, 3], &[]), 1.0);
        assert!((edit_distance(&[1, 2, 3, 4], &[1, 3, 4]) - 0.25).abs() < 1e-12);
        assert!((edit_distance(&[5, 6], &[6, 5]) - 1.0).abs() < 1e-12);
    }
}
