//! Batched sampling with a KV cache: each row has its own prompt (left-padded) and stops
//! at its own `<eos>`; temperature, top-k, and classifier-free guidance with the
//! conditional and unconditional rows in one batched forward:
//! `ℓ_cfg = ℓ(·|∅) + γ·(ℓ(·|x) − ℓ(·|∅))`, `ℓ` the log-softmax.
//!
//! Each row draws its noise from its own seeded generator (Gumbel-max), so a row's sample
//! does not depend on the other rows of the batch.

use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

use std::sync::Arc;

use crate::structure::{self, Cursors, Structure};
use crate::transformer::{KvCache, Transformer};

/// How to sample.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// CFG strength γ (`None`: plain conditional sampling, one forward row per prompt).
    pub cfg_gamma: Option<f64>,
    /// Only ids whose conditional probability is at least this share of the most likely
    /// id's may be drawn (`None`: every id): with CFG before guidance (see [`guide`]),
    /// without it a truncation of the conditional distribution.
    pub cfg_plausibility: Option<f64>,
    /// Which choices CFG re-weighs (see [`CfgScope`]).
    pub cfg_scope: CfgScope,
    pub max_new_tokens: usize,
}

/// Which choices classifier-free guidance re-weighs.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CfgScope {
    /// Every id: the standard formula.
    #[default]
    All,
    /// Only the choice within each of the task's content groups
    /// ([`Vocabulary::content_groups`]; in the folk task the pitches, the keys and the
    /// meters): the conditional model alone decides what kind of token comes next (a note,
    /// a duration, a bar line …), so guidance changes which note is played but never the
    /// rhythm. See [`guide`].
    Content,
}

impl std::str::FromStr for CfgScope {
    type Err = String;
    fn from_str(s: &str) -> Result<CfgScope, String> {
        match s {
            "all" => Ok(CfgScope::All),
            "content" => Ok(CfgScope::Content),
            _ => Err(format!("unknown CFG scope {s:?} (expected all or content)")),
        }
    }
}

impl std::fmt::Display for CfgScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CfgScope::All => "all",
            CfgScope::Content => "content",
        })
    }
}

impl Default for SamplingConfig {
    fn default() -> SamplingConfig {
        SamplingConfig {
            temperature: 1.0,
            top_k: None,
            cfg_gamma: None,
            cfg_plausibility: None,
            cfg_scope: CfgScope::All,
            max_new_tokens: 256,
        }
    }
}

/// The special ids and the ids a model may generate.
#[derive(Clone, Debug)]
pub struct Vocabulary {
    pub pad: u32,
    pub sep: u32,
    pub eos: u32,
    /// Ids that may be generated (the task's output tokens and `<eos>`).
    pub allowed: Vec<u32>,
    /// The groups [`CfgScope::Content`] guides within, as positions in `allowed` (the
    /// task chooses them: the folk task's are the pitches, the keys, the meters).
    pub content_groups: Vec<Vec<usize>>,
    /// The structure the task reads in an output (`crate::structure`; the folk task's:
    /// where in the bar each token falls), for policies that embed it.
    pub structure: Option<Arc<dyn Structure>>,
}

/// Sampled continuations, one per prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Samples {
    /// Generated ids, ending with `<eos>` when the row finished.
    pub tokens: Vec<Vec<u32>>,
    /// Log-probability of each generated id under the sampling distribution.
    pub logprobs: Vec<Vec<f32>>,
}

impl Vocabulary {
    /// The guidance groups of `scope` as `[A]` masks over the allowed ids.
    pub fn guidance_groups(&self, scope: CfgScope, device: Device) -> Vec<Tensor> {
        match scope {
            CfgScope::All => Vec::new(),
            CfgScope::Content => self
                .content_groups
                .iter()
                .map(|g| {
                    let mut m = vec![false; self.allowed.len()];
                    g.iter().for_each(|&i| m[i] = true);
                    Tensor::from_slice(&m).to(device)
                })
                .collect(),
        }
    }
}

/// Classifier-free guidance of conditional log-probabilities `c` by unconditional ones
/// `u` (same ids): `u + γ·(c − u)`, unnormalised. With a plausibility threshold α, ids
/// whose conditional probability is below α times the most likely id's get −∞ (the
/// adaptive plausibility constraint of contrastive decoding): guidance then re-weighs
/// what the conditional model finds plausible and cannot promote an id both models
/// consider unlikely merely because they disagree about how unlikely it is.
///
/// With `groups` (boolean `[A]` masks, [`Vocabulary::guidance_groups`]) guidance acts
/// only within each group: an id of group `G` gets `p_c(G) · softmax_G(u + γ·(c − u))`,
/// the conditional probability of the group shared out by the guided scores, and an id
/// in no group keeps its conditional probability. With γ = 1 this is `c` whatever the
/// groups.
pub fn guide(
    c: &Tensor,
    u: &Tensor,
    gamma: f64,
    plausibility: Option<f64>,
    groups: &[Tensor],
) -> Tensor {
    let mut g = u + (c - u) * gamma;
    let mut c = c.shallow_clone();
    if let Some(alpha) = plausibility.filter(|a| *a > 0.0) {
        let implausible = c.lt_tensor(&(c.amax([-1], true) + alpha.ln()));
        g = g.masked_fill(&implausible, f64::NEG_INFINITY);
        c = c.masked_fill(&implausible, f64::NEG_INFINITY);
    }
    if groups.is_empty() {
        return g;
    }
    let mut out = c.shallow_clone();
    for m in groups {
        let outside = m.logical_not();
        let lse = |t: &Tensor| {
            t.masked_fill(&outside, f64::NEG_INFINITY)
                .logsumexp([-1], true)
        };
        // A group the constraint emptied stays −∞ (and −∞ − (−1e30) is still −∞).
        let within = &g - lse(&g).clamp_min(-1e30);
        out = (lse(&c) + within).where_self(m, &out);
    }
    out
}

/// Left-pads rows into `[R, T]` ids and a `[R, T]` validity mask.
fn left_pad(rows: &[Vec<u32>], pad: u32, device: Device) -> (Tensor, Tensor) {
    let t = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * t);
    let mut valid = Vec::with_capacity(rows.len() * t);
    for r in rows {
        let n = t - r.len();
        ids.extend(std::iter::repeat_n(i64::from(pad), n).chain(r.iter().map(|&x| i64::from(x))));
        valid.extend(std::iter::repeat_n(false, n).chain(std::iter::repeat_n(true, r.len())));
    }
    let shape = [rows.len() as i64, t as i64];
    (
        Tensor::from_slice(&ids).view(shape).to(device),
        Tensor::from_slice(&valid).view(shape).to(device),
    )
}

/// Incremental decoding of a batch through the KV cache: each row's prompt and `<sep>`,
/// then one id a step. With CFG the unconditional rows (`<sep>` alone) advance with the
/// conditional ones in one batched forward. The sampler and [`guided_logprobs`] share it,
/// so what is scored is what is sampled from.
struct Decoder<'a> {
    model: &'a Transformer,
    gamma: Option<f64>,
    plausibility: Option<f64>,
    groups: Vec<Tensor>,
    allowed_idx: Tensor,
    cache: KvCache,
    /// Each row's structure features, for a policy that embeds them.
    cursors: Option<Cursors>,
    /// Logits of the next id, `[R, V]` (`R` = 2B with CFG).
    logits: Tensor,
    /// Ids the model may still take, `max_len` minus the longest row.
    room: usize,
    b: usize,
}

impl<'a> Decoder<'a> {
    fn start(
        model: &'a Transformer,
        prompts: &[Vec<u32>],
        v: &Vocabulary,
        cfg: &SamplingConfig,
    ) -> Decoder<'a> {
        let b = prompts.len();
        let device = model.device();
        let mut rows: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| p.iter().copied().chain([v.sep]).collect())
            .collect();
        if cfg.cfg_gamma.is_some() {
            rows.extend((0..b).map(|_| vec![v.sep]));
        }
        let room = (model.config.max_len as usize)
            .saturating_sub(rows.iter().map(Vec::len).max().unwrap_or(0));
        let mut cache = KvCache::new(model.config.n_layers);
        let (ids, valid) = left_pad(&rows, v.pad, device);
        let s = structure::of(&model.config, v);
        let features = s.map(|s| {
            let t = ids.size()[1] as usize;
            let f: Vec<Vec<i64>> = rows
                .iter()
                .map(|r| structure::row_features(s, r.len() - 1, &[]))
                .collect();
            let starts: Vec<usize> = rows.iter().map(|r| t - r.len()).collect();
            structure::batch_tensor(&f, &starts, t, s.spec().per_token as usize, device)
        });
        let logits = model
            .forward(&ids, &valid, features.as_ref(), Some(&mut cache), false)
            .select(1, -1);
        Decoder {
            model,
            gamma: cfg.cfg_gamma,
            plausibility: cfg.cfg_plausibility,
            groups: v.guidance_groups(cfg.cfg_scope, device),
            allowed_idx: Tensor::from_slice(
                &v.allowed.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(),
            )
            .to(device),
            cache,
            cursors: s.map(|s| Cursors::start(s, b)),
            logits,
            room,
            b,
        }
    }

    /// Log-probabilities `[B, A]` of the next id over the allowed ids, guided with CFG
    /// when set (unnormalised with the plausibility constraint or groups: see [`guide`]).
    fn log_probs(&self) -> Tensor {
        let l = self
            .logits
            .index_select(1, &self.allowed_idx)
            .log_softmax(-1, Kind::Float);
        match self.gamma {
            Some(gamma) => {
                let b = self.b as i64;
                let (c, u) = (l.narrow(0, 0, b), l.narrow(0, b, b));
                guide(&c, &u, gamma, self.plausibility, &self.groups)
            }
            // The constraint alone: guidance with γ = 1 is the conditional distribution.
            None if self.plausibility.is_some() => guide(&l, &l, 1.0, self.plausibility, &[]),
            None => l,
        }
    }

    /// Keeps the rows whose `keep` is true (with CFG, their unconditional rows too) and
    /// drops the others from the batch: the cache, the structure cursors and the row
    /// count. Call between [`Decoder::log_probs`] and [`Decoder::advance`].
    fn retain(&mut self, keep: &[bool]) {
        let kept: Vec<i64> = (0..self.b as i64).filter(|&i| keep[i as usize]).collect();
        let mut rows = kept.clone();
        if self.gamma.is_some() {
            rows.extend(kept.iter().map(|i| i + self.b as i64));
        }
        let rows = Tensor::from_slice(&rows).to(self.model.device());
        self.cache.retain_rows(&rows);
        if let Some(c) = &mut self.cursors {
            c.retain(keep);
        }
        self.b = kept.len();
    }

    /// Feeds one id per row (`None`: a finished row, which feeds `<pad>`).
    fn advance(&mut self, next: &[Option<u32>], pad: u32) {
        let device = self.model.device();
        let mut ids: Vec<i64> = next.iter().map(|x| i64::from(x.unwrap_or(pad))).collect();
        let times = if self.gamma.is_some() { 2 } else { 1 };
        if times == 2 {
            ids.extend_from_within(..);
        }
        let features = self.cursors.as_mut().map(|c| {
            c.read(next);
            c.tensor(times, device)
        });
        let ids = Tensor::from_slice(&ids).view([-1, 1]).to(device);
        let ones = Tensor::ones([ids.size()[0], 1], (Kind::Bool, device));
        self.logits = self
            .model
            .forward(&ids, &ones, features.as_ref(), Some(&mut self.cache), false)
            .select(1, -1);
    }
}

/// Samples one continuation per prompt (`prompts[i]` are prompt ids without `<sep>`),
/// row `i` seeded by `seeds[i]`.
pub fn sample(
    model: &Transformer,
    prompts: &[Vec<u32>],
    seeds: &[u64],
    v: &Vocabulary,
    cfg: &SamplingConfig,
) -> Result<Samples, tch::TchError> {
    tch::no_grad(|| sample_inner(model, prompts, seeds, v, cfg))
}

fn sample_inner(
    model: &Transformer,
    prompts: &[Vec<u32>],
    seeds: &[u64],
    v: &Vocabulary,
    cfg: &SamplingConfig,
) -> Result<Samples, tch::TchError> {
    let b = prompts.len();
    let mut rngs: Vec<rand::rngs::StdRng> = seeds
        .iter()
        .map(|&s| rand::rngs::StdRng::seed_from_u64(s))
        .collect();
    let mut decoder = Decoder::start(model, prompts, v, cfg);
    let steps = cfg.max_new_tokens.min(decoder.room);
    let mut out = Samples {
        tokens: vec![Vec::new(); b],
        logprobs: vec![Vec::new(); b],
    };
    let mut done = vec![false; b];
    // The original rows the decoder's rows are, in order: finished rows leave the batch
    // (see `COMPACT_AFTER`), and every row keeps its own random stream, so what a row
    // samples does not depend on when the others finish.
    let mut active: Vec<usize> = (0..b).collect();
    for _ in 0..steps {
        let mut l = decoder.log_probs() / cfg.temperature.max(1e-6);
        if let Some(k) = cfg.top_k.filter(|&k| k < v.allowed.len()) {
            let kth = l
                .topk(k as i64, -1, true, true)
                .0
                .select(1, k as i64 - 1)
                .unsqueeze(1);
            l = l.masked_fill(&l.lt_tensor(&kth), f64::NEG_INFINITY);
        }
        let logp = l.log_softmax(-1, Kind::Float).to_device(Device::Cpu);
        let logp: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&logp)?;
        let mut next = Vec::with_capacity(active.len());
        for (&i, row) in active.iter().zip(&logp) {
            // Gumbel-max: argmax(log p + g) is a draw from p.
            let mut best = (f32::NEG_INFINITY, 0usize);
            for (j, &lp) in row.iter().enumerate() {
                let u: f32 = rngs[i].gen_range(f32::EPSILON..1.0);
                let score = lp - (-u.ln()).ln();
                if lp > f32::NEG_INFINITY && score > best.0 {
                    best = (score, j);
                }
            }
            let id = v.allowed[best.1];
            if !done[i] {
                out.tokens[i].push(id);
                out.logprobs[i].push(row[best.1]);
                done[i] = id == v.eos;
            }
            next.push((!done[i]).then_some(id));
        }
        if done.iter().all(|&d| d) {
            break;
        }
        let finished = active.iter().filter(|&&i| done[i]).count();
        if finished * COMPACT_AFTER >= active.len() {
            let keep: Vec<bool> = active.iter().map(|&i| !done[i]).collect();
            decoder.retain(&keep);
            active.retain(|&i| !done[i]);
            next.retain(Option::is_some);
        }
        decoder.advance(&next, v.pad);
    }
    Ok(out)
}

/// Finished rows leave the sampler's batch once they are at least one in this many of
/// its rows: each compaction copies the cache, so rows finishing one by one are dropped
/// a few at a time.
const COMPACT_AFTER: usize = 8;

/// The distribution each id of `continuations[i]` was drawn from, teacher-forced through
/// the same KV-cache decoding as [`sample`] (temperature 1, no top-k): for row `i` and
/// step `t`, the normalised log-probabilities over `v.allowed` of the id at step `t`,
/// given the prompt and the ids before it. `cfg.cfg_gamma`, `cfg_plausibility` and
/// `cfg_scope` guide as in sampling; temperature and top-k are ignored.
pub fn guided_logprobs(
    model: &Transformer,
    prompts: &[Vec<u32>],
    continuations: &[Vec<u32>],
    v: &Vocabulary,
    cfg: &SamplingConfig,
) -> Result<Vec<Vec<Vec<f32>>>, tch::TchError> {
    tch::no_grad(|| {
        let mut decoder = Decoder::start(model, prompts, v, cfg);
        let steps = continuations.iter().map(Vec::len).max().unwrap_or(0);
        let mut out: Vec<Vec<Vec<f32>>> = vec![Vec::new(); prompts.len()];
        for t in 0..steps.min(decoder.room) {
            let l = decoder
                .log_probs()
                .log_softmax(-1, Kind::Float)
                .to_device(Device::Cpu);
            let l: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&l)?;
            let mut next = Vec::with_capacity(prompts.len());
            for (i, (row, c)) in l.into_iter().zip(continuations).enumerate() {
                if c.get(t).is_some() {
                    out[i].push(row);
                }
                next.push(c.get(t).copied());
            }
            decoder.advance(&next, v.pad);
        }
        Ok(out)
    })
}
