//! `qd eval`: k samples for each of N held-out prompts of a split (validation for
//! development, test for the final word), drawn in proportion to the task's strata
//! ([`select_prompts`]: the folk task's collections); quality (the judge), embedding
//! diversity (mean `1 − cos` between samples of the same prompt, the paper's metric),
//! edit diversity (normalised Levenshtein between the same pairs, which gaming the
//! embedder cannot move), the same two across different prompts (the upper bound), and
//! generation speed, overall and per stratum. Prompts and seeds are fixed, so numbers
//! from different calls compare.
//!
//! Every mean comes with its 95% interval (bootstrap over prompts), and the report keeps
//! the per-prompt values, so that two reports on the same prompts and seeds can be
//! compared with a paired interval (`crate::stats::paired_difference`).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::stats::{mean, mean_interval, Interval};
use model::sampling::{sample, SamplingConfig};
use model::task::{pair_diversity, Embedder, Judge, Split, Task};
use model::transformer::Transformer;

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// The held-out split the prompts come from.
    pub split: Split,
    /// Samples per prompt (at least 2).
    pub k: usize,
    /// Prompts used: a stratified sample of the split ([`select_prompts`]; `None`: all).
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
    /// The split the prompts came from.
    #[serde(default = "test_split")]
    pub split: Split,
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
    #[serde(deserialize_with = "crate::stats::nan_if_null")]
    pub quality_of_real_tunes: f64,
    /// Their validity (NaN without references).
    #[serde(default = "nan", deserialize_with = "crate::stats::nan_if_null")]
    pub validity_of_real_tunes: f64,
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
    /// Each prompt's stratum (the folk task: its collection), in the order of
    /// `per_prompt`.
    #[serde(default)]
    pub strata: Vec<String>,
    /// Validity by a checker outside the project, where the task has one (the folk task:
    /// the share of bars `abc2midi` does not warn about).
    #[serde(default)]
    pub external_validity: Option<ExternalValidity>,
}

/// Validity by a checker outside the project: the mean over prompts (each prompt the mean
/// over its samples with something to check), its 95% interval, and the same of the
/// real held-out outputs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExternalValidity {
    #[serde(deserialize_with = "crate::stats::nan_if_null")]
    pub mean: f64,
    pub interval: Interval,
    #[serde(deserialize_with = "crate::stats::nan_if_null")]
    pub of_real_tunes: f64,
}

fn test_split() -> Split {
    Split::Test
}

fn nan() -> f64 {
    f64::NAN
}

/// One stratum's share of a report: its means with their 95% intervals.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StratumReport {
    pub stratum: String,
    pub prompts: usize,
    pub quality: f64,
    pub quality_interval: Interval,
    pub validity: f64,
    pub validity_interval: Interval,
    pub embed_diversity: f64,
    pub embed_diversity_interval: Interval,
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
    /// The outside checker's validity (empty without one; NaN for a prompt none of whose
    /// samples had anything to check).
    #[serde(default, deserialize_with = "crate::stats::nans_if_null")]
    pub external_validity: Vec<f64>,
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

/// The values that are numbers.
fn finite(values: &[f64]) -> Vec<f64> {
    values.iter().copied().filter(|v| v.is_finite()).collect()
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

/// The seed of the prompt sample: fixed, so that every evaluation of `n` prompts of a split
/// (every arm of a sweep, every call) uses the same prompts whatever its sampling seed.
const PROMPT_SAMPLE_SEED: u64 = 0x005E_ED0F_9A0D;

/// Which `n` of `prompts` to evaluate (indices, increasing): a sample stratified by
/// `Prompt::stratum` — each stratum gets its share of `n` by largest remainder, and its
/// prompts are a seeded draw within it. All of them when `n` is `None` or at least their
/// number.
pub fn select_prompts(prompts: &[model::task::Prompt], n: Option<usize>) -> Vec<usize> {
    let total = prompts.len();
    let n = n.unwrap_or(total).min(total);
    if n == total {
        return (0..total).collect();
    }
    let mut strata: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, p) in prompts.iter().enumerate() {
        strata.entry(p.stratum.as_str()).or_default().push(i);
    }
    // Each stratum's quota: the floor of its exact share, then one more for the largest
    // remainders (ties to the larger stratum, then by name) until the quotas sum to n.
    let mut quotas: Vec<(&str, usize, f64)> = strata
        .iter()
        .map(|(s, idx)| {
            let exact = n as f64 * idx.len() as f64 / total as f64;
            (*s, exact.floor() as usize, exact - exact.floor())
        })
        .collect();
    let mut order: Vec<usize> = (0..quotas.len()).collect();
    order.sort_by(|&a, &b| {
        quotas[b]
            .2
            .total_cmp(&quotas[a].2)
            .then(strata[quotas[b].0].len().cmp(&strata[quotas[a].0].len()))
    });
    let short = n - quotas.iter().map(|q| q.1).sum::<usize>();
    for &i in order.iter().take(short) {
        quotas[i].1 += 1;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(PROMPT_SAMPLE_SEED);
    let mut chosen: Vec<usize> = quotas
        .iter()
        .flat_map(|(s, quota, _)| {
            let mut idx = strata[s].clone();
            idx.shuffle(&mut rng);
            idx.truncate(*quota);
            idx
        })
        .collect();
    chosen.sort_unstable();
    chosen
}

/// Evaluates a policy on held-out prompts of the task.
pub fn evaluate(
    policy: &Transformer,
    task: &dyn Task,
    embedder: &dyn Embedder,
    judge: &dyn Judge,
    cfg: &EvalConfig,
) -> Result<EvalReport> {
    let split = cfg.split;
    let all = task.prompts(split);
    // (index in the split, prompt): the judge takes prompts by their index in the split.
    let prompts: Vec<(usize, &model::task::Prompt)> = select_prompts(&all, cfg.prompts)
        .into_iter()
        .map(|i| (i, &all[i]))
        .collect();
    ensure!(
        !prompts.is_empty(),
        "the task has no {split} prompts to evaluate (choose the split: --split, evaluator.split)"
    );
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
        let ids: Vec<Vec<u32>> = chunk
            .iter()
            .map(|(p, _)| prompts[*p].1.ids.clone())
            .collect();
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
        .filter_map(|(i, p)| p.reference.as_deref().map(|r| (*i, r)))
        .collect();
    let real = judge.scores(split, &references)?;
    let quality_of_real_tunes = mean(&real.iter().map(|s| s.quality()).collect::<Vec<_>>());
    let validity_of_real_tunes = mean(&real.iter().map(|s| s.validity).collect::<Vec<_>>());
    let mut scores = Vec::with_capacity(tunes.len());
    let mut z = Vec::new();
    for (i, chunk) in tunes.chunks(256).enumerate() {
        let judged: Vec<(usize, &[u32])> = chunk
            .iter()
            .enumerate()
            .map(|(j, t)| (prompts[rows[i * 256 + j].0].0, t.as_slice()))
            .collect();
        scores.extend(judge.scores(split, &judged)?);
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
    let samples: Vec<&[u32]> = tunes.iter().map(Vec::as_slice).collect();
    let external = task.external_validity(&samples)?;
    let external_validity = match &external {
        Some(per_sample) => {
            let reference_tunes: Vec<&[u32]> = references.iter().map(|r| r.1).collect();
            let of_real = task
                .external_validity(&reference_tunes)?
                .unwrap_or_default();
            let per_prompt: Vec<f64> = per_sample.chunks(k).map(|c| mean(&finite(c))).collect();
            let numbers = finite(&per_prompt);
            Some(ExternalValidity {
                mean: mean(&numbers),
                interval: mean_interval(&numbers),
                of_real_tunes: mean(&finite(&of_real)),
            })
        }
        None => None,
    };
    let per_prompt = PerPrompt {
        external_validity: external
            .map(|e| e.chunks(k).map(|c| mean(&finite(c))).collect())
            .unwrap_or_default(),
        quality: group_means(&scores.iter().map(|s| s.quality()).collect::<Vec<_>>(), k),
        adherence: group_means(&scores.iter().map(|s| s.adherence).collect::<Vec<_>>(), k),
        validity: group_means(&scores.iter().map(|s| s.validity).collect::<Vec<_>>(), k),
        embed_diversity: group_means(&embed_div(&within)?, pairs),
        edit_diversity: group_means(&edit_div(&within), pairs),
    };
    Ok(EvalReport {
        split,
        prompts: n,
        samples: tunes.len(),
        quality: mean(&per_prompt.quality),
        adherence: mean(&per_prompt.adherence),
        validity: mean(&per_prompt.validity),
        quality_of_real_tunes,
        validity_of_real_tunes,
        embed_diversity: mean(&per_prompt.embed_diversity),
        edit_diversity: mean(&per_prompt.edit_diversity),
        embed_diversity_across: mean(&embed_div(&across)?),
        edit_diversity_across: mean(&edit_div(&across)),
        tokens_per_s: generated as f64 / seconds.max(1e-9),
        mean_length: generated as f64 / tokens.len().max(1) as f64,
        finished,
        intervals: per_prompt.intervals(),
        per_prompt,
        strata: prompts.iter().map(|(_, p)| p.stratum.clone()).collect(),
        external_validity,
    })
}

impl EvalReport {
    /// Each stratum's means and intervals, by name.
    pub fn by_stratum(&self) -> Vec<StratumReport> {
        let mut names: Vec<&String> = self.strata.iter().collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let pick = |v: &[f64]| -> Vec<f64> {
                    v.iter()
                        .zip(&self.strata)
                        .filter(|(_, s)| *s == name)
                        .map(|(x, _)| *x)
                        .collect()
                };
                let (q, v, d) = (
                    pick(&self.per_prompt.quality),
                    pick(&self.per_prompt.validity),
                    pick(&self.per_prompt.embed_diversity),
                );
                StratumReport {
                    stratum: name.clone(),
                    prompts: q.len(),
                    quality: mean(&q),
                    quality_interval: mean_interval(&q),
                    validity: mean(&v),
                    validity_interval: mean_interval(&v),
                    embed_diversity: mean(&d),
                    embed_diversity_interval: mean_interval(&d),
                }
            })
            .collect()
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let mut strata = String::new();
        for s in self.by_stratum() {
            strata += &format!(
                "  {:<16} {:>4} prompts  quality {:.4} {}  validity {:.3}  diversity {:.4}\n",
                s.stratum,
                s.prompts,
                s.quality,
                s.quality_interval.text(4),
                s.validity,
                s.embed_diversity
            );
        }
        format!(
            "{} split: {} prompts × {} samples (95% intervals: bootstrap over prompts)\n\
             quality                 {:.4} {}   (real held-out tunes {:.4})\n\
             = adherence × validity  {:.4} {} × {:.4} {} (means; real tunes' validity {:.3})\n\
             {}\
             embedding diversity     {:.4} {}   (across prompts {:.4})\n\
             edit diversity          {:.4} {}   (across prompts {:.4})\n\
             mean length             {:.1} tokens, {:.1}% ended with <eos>\n\
             generation              {:.0} tokens/s\n\
             by stratum:\n{}",
            self.split,
            self.prompts,
            self.samples / self.prompts.max(1),
            self.quality,
            self.intervals.quality.text(4),
            self.quality_of_real_tunes,
            self.adherence,
            self.intervals.adherence.text(3),
            self.validity,
            self.intervals.validity.text(3),
            self.validity_of_real_tunes,
            match &self.external_validity {
                Some(e) => format!(
                    "outside validity check  {:.3} {}   (real held-out tunes {:.3})\n",
                    e.mean,
                    e.interval.text(3),
                    e.of_real_tunes
                ),
                None => String::new(),
            },
            self.embed_diversity,
            self.intervals.embed_diversity.text(4),
            self.embed_diversity_across,
            self.edit_diversity,
            self.intervals.edit_diversity.text(4),
            self.edit_diversity_across,
            self.mean_length,
            100.0 * self.finished,
            self.tokens_per_s,
            strata
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{edit_distance, select_prompts};
    use model::task::Prompt;

    fn prompts(strata: &[(&str, usize)]) -> Vec<Prompt> {
        strata
            .iter()
            .flat_map(|&(s, n)| {
                (0..n).map(move |i| Prompt {
                    ids: vec![i as u32],
                    reference: None,
                    stratum: s.into(),
                })
            })
            .collect()
    }

    /// The test split's shape (375 / 100 / 67 / 53 / 6, the first stratum listed first, as
    /// the records are): 200 prompts come from every stratum in proportion, not from the
    /// first one alone.
    #[test]
    fn prompts_are_a_stratified_sample() {
        let all = prompts(&[
            ("essen", 375),
            ("oneill", 100),
            ("ryan", 67),
            ("aird", 53),
            ("misc", 6),
        ]);
        let chosen = select_prompts(&all, Some(200));
        assert_eq!(chosen.len(), 200);
        assert!(
            chosen.windows(2).all(|w| w[0] < w[1]),
            "increasing, no repeats"
        );
        let count = |s: &str| chosen.iter().filter(|&&i| all[i].stratum == s).count();
        // Exact shares 124.8 / 33.3 / 22.3 / 17.6 / 2.0: floors, then the largest remainders.
        assert_eq!(
            [
                count("essen"),
                count("oneill"),
                count("ryan"),
                count("aird"),
                count("misc")
            ],
            [125, 33, 22, 18, 2]
        );
        assert_eq!(
            select_prompts(&all, Some(200)),
            chosen,
            "the same prompts every call"
        );
        // Not the first ones of a stratum: a draw within it.
        assert_ne!(chosen[..125], (0..125).collect::<Vec<_>>()[..]);
        assert_eq!(
            select_prompts(&all, None),
            (0..all.len()).collect::<Vec<_>>()
        );
        assert_eq!(select_prompts(&all, Some(10_000)).len(), all.len());
        assert_eq!(select_prompts(&all, Some(0)), Vec::<usize>::new());
    }

    #[test]
    fn normalised_levenshtein() {
        assert_eq!(edit_distance(&[], &[]), 0.0);
        assert_eq!(edit_distance(&[1, 2, 3], &[1, 2, 3]), 0.0);
        assert_eq!(edit_distance(&[1, 2, 3], &[]), 1.0);
        assert!((edit_distance(&[1, 2, 3, 4], &[1, 3, 4]) - 0.25).abs() < 1e-12);
        assert!((edit_distance(&[5, 6], &[6, 5]) - 1.0).abs() < 1e-12);
    }
}
