//! The joint objective `L = L_distill + β·L_pg` (docs/architecture.md, "The method") on a
//! batch of sample pairs.
//!
//! * `L_distill`: per generated token, the divergence between the student `π_θ(·|x,y<t)`
//!   and the frozen teacher with CFG, `softmax(ℓ(·|∅) + γ·(ℓ(·|x) − ℓ(·|∅)))`, over the
//!   ids a sample may hold; summed over tokens, averaged over prompts.
//! * `L_pg`: REINFORCE on the pair's diversity reward, `−(r − b)·w·Σ_s log π_θ(y_s|x)`
//!   with the pair's truncated importance weight `w = min(ρ̄, Π_s π_θ(y_s)/μ(y_s))`
//!   (detached) correcting for the behaviour policy `μ` that sampled it: the reward is a
//!   function of the whole pair, so the pair's joint ratio weighs both of its terms;
//!   averaged over prompts.

use tch::{Device, Kind, Tensor};

use common::settings::{Divergence, LearnerSettings};
use model::sampling::{guide, CfgScope, Vocabulary};
use model::structure;
use model::transformer::Transformer;
use tch::TchError;

use crate::queue::Pair;

/// Ratios within this relative distance of `ρ̄` are float noise, not clipping (the
/// sampler's and the learner's log-probabilities are sums of float32 terms).
const CLIP_TOLERANCE: f64 = 1e-3;

/// The loss's settings.
#[derive(Clone, Copy, Debug)]
pub struct LossConfig {
    pub beta: f64,
    pub cfg_gamma: f64,
    /// The teacher's plausibility constraint (0: plain CFG).
    pub cfg_plausibility: f64,
    /// What the teacher's guidance re-weighs.
    pub cfg_scope: CfgScope,
    pub divergence: Divergence,
    pub jsd_alpha: f64,
    pub rho_bar: f64,
}

impl From<&LearnerSettings> for LossConfig {
    fn from(l: &LearnerSettings) -> LossConfig {
        LossConfig {
            beta: l.beta,
            cfg_gamma: l.cfg_gamma,
            cfg_plausibility: l.cfg_plausibility,
            cfg_scope: l.cfg_scope,
            divergence: l.divergence,
            jsd_alpha: l.jsd_alpha,
            rho_bar: l.rho_bar,
        }
    }
}

/// The loss to minimise and what the learner reports about the batch.
#[derive(Debug)]
pub struct Loss {
    /// `L_distill + β·L_pg`.
    pub total: Tensor,
    /// `β·L_pg`, the policy-gradient part of `total` (sharing its graph), whose gradient
    /// the learner measures apart.
    pub weighted_pg: Tensor,
    pub stats: LossStats,
}

/// Per-batch numbers (detached).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LossStats {
    pub loss: f64,
    /// `L_distill` with the configured divergence.
    pub distill: f64,
    pub pg: f64,
    /// `KL(π_θ‖π_cfg)` per token, whatever the divergence trained.
    pub kl: f64,
    /// Student entropy per token.
    pub entropy: f64,
    pub reward_mean: f64,
    pub reward_std: f64,
    pub baseline: f64,
    /// Share of pairs whose importance ratio exceeded `ρ̄` (by more than 0.1%).
    pub clip_fraction: f64,
    /// The pairs' truncated importance weights `min(ρ̄, ρ)`: mean, smallest, and their
    /// effective sample size as a share of the pairs, `(Σw)² / (n·Σw²)` (1 when every
    /// weight is equal; near `1/n` when one pair carries the policy-gradient term).
    pub weight_mean: f64,
    pub weight_min: f64,
    pub weight_ess: f64,
    pub tokens: usize,
}

/// Maps vocabulary ids to positions in the generatable set.
#[derive(Debug)]
pub struct Generatable {
    /// The sampler's view of the vocabulary: `allowed` are the ids a sample may hold, in
    /// logit order.
    pub vocabulary: Vocabulary,
    index_of: Vec<i64>,
    ids_tensor: Tensor,
    /// The teacher's guidance groups for `CfgScope::Content`, built once.
    content_groups: Vec<Tensor>,
}

impl Generatable {
    pub fn new(vocabulary: Vocabulary, vocab_size: usize, device: Device) -> Generatable {
        let mut index_of = vec![-1i64; vocab_size];
        for (i, &id) in vocabulary.allowed.iter().enumerate() {
            index_of[id as usize] = i as i64;
        }
        let ids: Vec<i64> = vocabulary.allowed.iter().map(|&x| i64::from(x)).collect();
        Generatable {
            content_groups: vocabulary.guidance_groups(CfgScope::Content, device),
            vocabulary,
            index_of,
            ids_tensor: Tensor::from_slice(&ids).to(device),
        }
    }
}

/// Right-padded rows, each with where its generated tokens start and how many it has.
struct Rows {
    ids: Tensor,
    valid: Tensor,
    /// Structure features, for a policy that embeds them.
    features: Option<Tensor>,
    /// Per row: its length, the position of `<sep>` (whose logits predict the first
    /// generated token) and the number of generated tokens.
    shape: Vec<(i64, usize, usize)>,
}

/// Row groups of similar length the model runs on (less padding; the same numbers). On
/// `qd bench learner`'s batch with the default 256-token samples (1,832 tokens in 16
/// rows) a step took 0.19–0.24 s in 4 groups against 0.28–0.29 s in one; with samples
/// cut at 128 tokens, nearly all full, it made no measurable difference.
pub const LENGTH_GROUPS: usize = 4;

/// Builds `[prefix] <sep> y` rows for `model`; `with_prompt` false gives the
/// unconditional `<sep> y`.
fn rows(pairs: &[Pair], with_prompt: bool, v: &Vocabulary, model: &Transformer) -> Rows {
    let device = model.device();
    let structure = structure::of(&model.config, v);
    let seqs: Vec<(Vec<i64>, usize, usize)> = pairs
        .iter()
        .flat_map(|p| {
            p.samples.iter().map(move |(y, _)| {
                let prefix: &[u32] = if with_prompt { &p.prompt } else { &[] };
                let s: Vec<i64> = prefix
                    .iter()
                    .chain(std::iter::once(&v.sep))
                    .chain(y.iter())
                    .map(|&x| i64::from(x))
                    .collect();
                (s, prefix.len(), y.len())
            })
        })
        .collect();
    let t = seqs.iter().map(|(s, _, _)| s.len()).max().unwrap_or(1);
    let mut ids = vec![i64::from(v.pad); seqs.len() * t];
    let mut valid = vec![false; seqs.len() * t];
    for (r, (s, _, _)) in seqs.iter().enumerate() {
        for (j, &x) in s.iter().enumerate() {
            ids[r * t + j] = x;
            valid[r * t + j] = true;
        }
    }
    let features = structure.map(|st| {
        let f: Vec<Vec<i64>> = pairs
            .iter()
            .flat_map(|p| {
                let plen = if with_prompt { p.prompt.len() } else { 0 };
                p.samples
                    .iter()
                    .map(move |(y, _)| structure::row_features(st, plen, y))
            })
            .collect();
        let k = st.spec().per_token as usize;
        structure::batch_tensor(&f, &vec![0; f.len()], t, k, device)
    });
    let shape = [seqs.len() as i64, t as i64];
    Rows {
        ids: Tensor::from_slice(&ids).view(shape).to(device),
        valid: Tensor::from_slice(&valid).view(shape).to(device),
        features,
        shape: seqs
            .iter()
            .map(|(s, p, n)| (s.len() as i64, *p, *n))
            .collect(),
    }
}

/// Log-probabilities `[N, A]` over the generatable ids for every generated token, in
/// order: the model runs on `groups` groups of rows of similar length, each cut to its
/// longest row (1: the whole padded batch at once). A right-padded row's tokens see
/// nothing past its end, so the grouping changes no number but the order of float sums.
fn token_logprobs(
    model: &Transformer,
    r: &Rows,
    g: &Generatable,
    train: bool,
    groups: usize,
) -> Tensor {
    let device = r.ids.device();
    // Where each row's generated tokens sit in the output.
    let mut first = Vec::with_capacity(r.shape.len());
    let mut n_tokens = 0i64;
    for &(_, _, n) in &r.shape {
        first.push(n_tokens);
        n_tokens += n as i64;
    }
    let lengths: Vec<i64> = r.shape.iter().map(|s| s.0).collect();
    let (mut parts, mut order) = (Vec::new(), Vec::with_capacity(n_tokens as usize));
    for (rows, t) in model::batch::groups_by_length(&lengths, groups) {
        let idx = Tensor::from_slice(&rows).to(device);
        let take = |x: &Tensor| x.index_select(0, &idx).narrow(1, 0, t);
        let features = r.features.as_ref().map(take);
        let logits = model.forward(
            &take(&r.ids),
            &take(&r.valid),
            features.as_ref(),
            None,
            train,
        );
        // The logits at <sep> (position plen) predict y_1, and so on.
        let mut gather = Vec::new();
        for (k, &row) in rows.iter().enumerate() {
            let (_, plen, n) = r.shape[row as usize];
            gather.extend((0..n).map(|j| k as i64 * t + (plen + j) as i64));
            order.extend((0..n as i64).map(|j| first[row as usize] + j));
        }
        let v = logits.size()[2];
        parts.push(
            logits
                .view([-1, v])
                .index_select(0, &Tensor::from_slice(&gather).to(device)),
        );
    }
    // parts hold the tokens in `order`; put each back at its place.
    let mut back = vec![0i64; order.len()];
    for (i, &o) in order.iter().enumerate() {
        back[o as usize] = i as i64;
    }
    Tensor::cat(&parts, 0)
        .index_select(0, &Tensor::from_slice(&back).to(device))
        .index_select(1, &g.ids_tensor)
        .log_softmax(-1, Kind::Float)
}

/// Teacher log-probabilities are floored here, so that ids the plausibility constraint
/// excludes cost a finite (large) divergence instead of an infinite one.
const TEACHER_LOG_FLOOR: f64 = -30.0;

/// The teacher's CFG log-probabilities `[N, A]` (no gradient).
pub fn teacher_logprobs(
    teacher: &Transformer,
    pairs: &[Pair],
    g: &Generatable,
    cfg: &LossConfig,
) -> Tensor {
    tch::no_grad(|| {
        let c = token_logprobs(
            teacher,
            &rows(pairs, true, &g.vocabulary, teacher),
            g,
            false,
            LENGTH_GROUPS,
        );
        let u = token_logprobs(
            teacher,
            &rows(pairs, false, &g.vocabulary, teacher),
            g,
            false,
            LENGTH_GROUPS,
        );
        let groups = match cfg.cfg_scope {
            CfgScope::All => &[][..],
            CfgScope::Content => &g.content_groups[..],
        };
        guide(&c, &u, cfg.cfg_gamma, Some(cfg.cfg_plausibility), groups)
            .log_softmax(-1, Kind::Float)
            .clamp_min(TEACHER_LOG_FLOOR)
    })
}

/// Per-token divergence `[N]` between student `ls` and teacher `lt` log-probabilities.
pub fn divergence(ls: &Tensor, lt: &Tensor, d: Divergence, alpha: f64) -> Tensor {
    let kl = |a: &Tensor, b: &Tensor| (a.exp() * (a - b)).sum_dim_intlist(-1, false, Kind::Float);
    match d {
        Divergence::ReverseKl => kl(ls, lt),
        Divergence::ForwardKl => kl(lt, ls),
        Divergence::Jsd => {
            let m =
                Tensor::stack(&[ls + alpha.ln(), lt + (1.0 - alpha).ln()], 0).logsumexp([0], false);
            kl(ls, &m) * alpha + kl(lt, &m) * (1.0 - alpha)
        }
    }
}

/// The student's side of a batch: per-token log-probabilities `[N, A]` over the
/// generatable ids, `log π_θ(y)` per sample `[S]`, and the samples' behaviour
/// `log μ(y)`.
struct StudentTerms {
    ls: Tensor,
    logp_seq: Tensor,
    behaviour: Vec<f64>,
}

fn student_terms(student: &Transformer, pairs: &[Pair], g: &Generatable) -> StudentTerms {
    let device = student.device();
    // Dropout off: the behaviour log-probs were taken without it, so at staleness 0 the
    // importance ratio is exactly 1.
    let ls = token_logprobs(
        student,
        &rows(pairs, true, &g.vocabulary, student),
        g,
        false,
        LENGTH_GROUPS,
    );
    // Which sample each token belongs to, and the token's index in the generatable set.
    let mut seq_of = Vec::new();
    let mut target = Vec::new();
    let mut behaviour = Vec::new();
    for p in pairs {
        for (tokens, lps) in &p.samples {
            let s = behaviour.len() as i64;
            seq_of.extend(std::iter::repeat_n(s, tokens.len()));
            target.extend(tokens.iter().map(|&id| g.index_of[id as usize].max(0)));
            behaviour.push(lps.iter().map(|&x| f64::from(x)).sum::<f64>());
        }
    }
    let seq_of = Tensor::from_slice(&seq_of).to(device);
    let target = Tensor::from_slice(&target).to(device);
    let per_token = ls.gather(1, &target.unsqueeze(1), false).squeeze_dim(1);
    let logp_seq = Tensor::zeros([behaviour.len() as i64], (Kind::Float, device))
        .index_add(0, &seq_of, &per_token);
    StudentTerms {
        ls,
        logp_seq,
        behaviour,
    }
}

/// `log π(y|x)` of every sample of `pairs` under `model`, in order.
pub fn sequence_logprobs(
    model: &Transformer,
    pairs: &[Pair],
    g: &Generatable,
) -> Result<Vec<f64>, TchError> {
    tch::no_grad(|| {
        let t = student_terms(model, pairs, g);
        Vec::<f64>::try_from(t.logp_seq.to_kind(Kind::Double).to_device(tch::Device::Cpu))
    })
}

/// The loss of `student` on `pairs`, with the reward baseline `baseline`.
pub fn loss(
    student: &Transformer,
    teacher: &Transformer,
    pairs: &[Pair],
    g: &Generatable,
    baseline: f64,
    cfg: &LossConfig,
) -> Result<Loss, TchError> {
    let device = student.device();
    let n_prompts = pairs.len().max(1) as f64;
    let lt = teacher_logprobs(teacher, pairs, g, cfg);
    let StudentTerms {
        ls,
        logp_seq,
        behaviour,
    } = student_terms(student, pairs, g);
    let rewards: Vec<f64> = pairs.iter().map(|p| f64::from(p.reward)).collect();

    let d = divergence(&ls, &lt, cfg.divergence, cfg.jsd_alpha);
    let distill = d.sum(Kind::Float) / n_prompts;

    // The pairs' truncated importance weights: each pair's ratio is the product of its
    // samples' ratios, and both samples take it.
    let log_ratio = logp_seq.detach()
        - Tensor::from_slice(&behaviour)
            .to_kind(Kind::Float)
            .to(device);
    let pair_of: Vec<i64> = pairs
        .iter()
        .enumerate()
        .flat_map(|(i, p)| std::iter::repeat_n(i as i64, p.samples.len()))
        .collect();
    let pair_of = Tensor::from_slice(&pair_of).to(device);
    let pair_ratio = Tensor::zeros([pairs.len() as i64], (Kind::Float, device))
        .index_add(0, &pair_of, &log_ratio)
        .exp();
    let pair_weight = pair_ratio.clamp_max(cfg.rho_bar);
    let (weight_mean, weight_min, weight_ess) = weight_summary(&Vec::<f64>::try_from(
        pair_weight.to_kind(Kind::Double).to_device(Device::Cpu),
    )?);
    let weight = pair_weight.index_select(0, &pair_of);
    let clip_fraction = f64::try_from(
        pair_ratio
            .gt(cfg.rho_bar * (1.0 + CLIP_TOLERANCE))
            .to_kind(Kind::Float)
            .mean(Kind::Float),
    )?;
    let per_sample_adv: Vec<f64> = pairs
        .iter()
        .flat_map(|p| std::iter::repeat_n(f64::from(p.reward) - baseline, p.samples.len()))
        .collect();
    let adv = Tensor::from_slice(&per_sample_adv)
        .to_kind(Kind::Float)
        .to(device);
    let pg = -(adv * weight * &logp_seq).sum(Kind::Float) / n_prompts;

    let weighted_pg = &pg * cfg.beta;
    let total = &distill + &weighted_pg;
    let (kl, entropy) = tch::no_grad(|| {
        let kl = divergence(&ls, &lt, Divergence::ReverseKl, 0.5).mean(Kind::Float);
        let ent = -(ls.exp() * &ls)
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float);
        Ok::<_, TchError>((f64::try_from(kl)?, f64::try_from(ent)?))
    })?;
    let mean = rewards.iter().sum::<f64>() / rewards.len().max(1) as f64;
    let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rewards.len().max(1) as f64;
    let scalar = |t: &Tensor| f64::try_from(t.detach());
    let stats = LossStats {
        loss: scalar(&total)?,
        distill: scalar(&distill)?,
        pg: scalar(&pg)?,
        kl,
        entropy,
        reward_mean: mean,
        reward_std: var.sqrt(),
        baseline,
        clip_fraction,
        weight_mean,
        weight_min,
        weight_ess,
        tokens: ls.size()[0] as usize,
    };
    Ok(Loss {
        total,
        weighted_pg,
        stats,
    })
}

/// Mean, minimum and effective sample size share `(Σw)² / (n·Σw²)` of `weights` (an
/// empty batch, or all-zero weights: 0).
pub fn weight_summary(weights: &[f64]) -> (f64, f64, f64) {
    if weights.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let n = weights.len() as f64;
    let sum: f64 = weights.iter().sum();
    let squares: f64 = weights.iter().map(|w| w * w).sum();
    let min = weights.iter().copied().fold(f64::INFINITY, f64::min);
    let ess = if squares > 0.0 {
        sum * sum / (n * squares)
    } else {
        0.0
    };
    (sum / n, min, ess)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Pairs of samples of very different lengths, as rollouts are.
    fn pairs() -> Vec<Pair> {
        (0..5u32)
            .map(|i| Pair {
                prompt: (0..i % 3).map(|j| 4 + j).collect(),
                reward: 0.5,
                samples: [1 + 9 * i, 3 + 4 * i]
                    .iter()
                    .map(|&n| {
                        let y: Vec<u32> = (0..n).map(|j| 10 + (i * 3 + j) % 30).collect();
                        let lp = vec![-1.0f32; y.len()];
                        (y, lp)
                    })
                    .collect(),
                version: 1,
            })
            .collect()
    }

    /// The grouped forward gives the one-pass log-probabilities, token for token and in
    /// the same order, conditional and unconditional, and the same gradient.
    #[test]
    fn grouped_rows_give_the_padded_batch_numbers() {
        let (vs, model) = testkit::tiny(3);
        let g = Generatable::new(testkit::vocabulary(), testkit::VOCAB, Device::Cpu);
        let grads = |loss: Tensor| testkit::gradients(&vs, &loss);
        for with_prompt in [true, false] {
            let r = rows(&pairs(), with_prompt, &g.vocabulary, &model);
            let one = token_logprobs(&model, &r, &g, false, 1);
            let reference = grads(one.sum(Kind::Float));
            for groups in [2, 3, 4, 10] {
                let grouped = token_logprobs(&model, &r, &g, false, groups);
                assert_eq!(grouped.size(), one.size());
                let diff = (&grouped - &one).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "{groups} groups: {diff}");
                for ((name, a), (_, b)) in grads(grouped.sum(Kind::Float)).iter().zip(&reference) {
                    let d = (a - b).abs().max().double_value(&[]);
                    let scale = b.abs().max().double_value(&[]).max(1e-12);
                    assert!(d <= 1e-4 * scale, "{groups} groups, {name}: {d} of {scale}");
                }
            }
        }
    }
}
