//! Training sequences `[prompt] <sep> [tune] <eos>`, right-padded, with the loss on the
//! tune tokens and `<eos>` only; and the language-model loss.

use tch::{Device, Kind, Tensor};

use crate::sampling::Vocabulary;
use crate::structure;
use crate::transformer::Transformer;

/// A right-padded batch.
#[derive(Debug)]
pub struct LmBatch {
    /// `[B, T]` input ids.
    pub input: Tensor,
    /// `[B, T]` bool: real tokens.
    pub valid: Tensor,
    /// `[B, T]` next-token targets.
    pub target: Tensor,
    /// `[B, T]` float: 1 where the target is a tune token or `<eos>`.
    pub loss_mask: Tensor,
    /// `[B, T, K]` structure features (`crate::structure`), when the task reads a
    /// structure (a policy without a structure embedding ignores them).
    pub features: Option<Tensor>,
}

/// Builds a batch from `(prompt, tune)` id pairs; sequences longer than `max_len + 1` are
/// cut (their `<eos>` is lost, the rest still trains).
pub fn lm_batch(
    examples: &[(&[u32], &[u32])],
    v: &Vocabulary,
    max_len: usize,
    device: Device,
) -> LmBatch {
    let seqs: Vec<(Vec<i64>, usize)> = examples
        .iter()
        .map(|(p, t)| {
            let mut s: Vec<i64> = p.iter().map(|&x| i64::from(x)).collect();
            s.push(i64::from(v.sep));
            s.extend(t.iter().map(|&x| i64::from(x)));
            s.push(i64::from(v.eos));
            s.truncate(max_len + 1);
            (s, p.len())
        })
        .collect();
    let t = seqs
        .iter()
        .map(|(s, _)| s.len() - 1)
        .max()
        .unwrap_or(1)
        .max(1);
    let b = seqs.len();
    let (mut input, mut target) = (vec![i64::from(v.pad); b * t], vec![i64::from(v.pad); b * t]);
    let (mut valid, mut mask) = (vec![false; b * t], vec![0f32; b * t]);
    for (i, (s, plen)) in seqs.iter().enumerate() {
        for j in 0..s.len() - 1 {
            input[i * t + j] = s[j];
            target[i * t + j] = s[j + 1];
            valid[i * t + j] = true;
            // Position `plen` holds <sep>; from there on, targets are the tune and <eos>.
            mask[i * t + j] = if j >= *plen { 1.0 } else { 0.0 };
        }
    }
    let features = v.structure.as_deref().map(|st| {
        let rows: Vec<Vec<i64>> = examples
            .iter()
            .zip(&seqs)
            .map(|((p, tune), (s, _))| {
                // The input holds the prompt, <sep> and the tune ids that fit.
                let tune_in = (s.len() - 1).saturating_sub(p.len() + 1).min(tune.len());
                structure::row_features(st, p.len(), &tune[..tune_in])
            })
            .collect();
        let k = st.spec().per_token as usize;
        structure::batch_tensor(&rows, &vec![0; b], t, k, device)
    });
    let shape = [b as i64, t as i64];
    LmBatch {
        input: Tensor::from_slice(&input).view(shape).to(device),
        valid: Tensor::from_slice(&valid).view(shape).to(device),
        target: Tensor::from_slice(&target).view(shape).to(device),
        loss_mask: Tensor::from_slice(&mask).view(shape).to(device),
        features,
    }
}

/// Mean cross-entropy over the masked targets, in one forward pass over the padded batch.
pub fn lm_loss(model: &Transformer, batch: &LmBatch, train: bool) -> Tensor {
    masked_nll_sum(
        model,
        &batch.input,
        &batch.valid,
        batch.features.as_ref(),
        &batch.target,
        &batch.loss_mask,
        train,
    ) / batch.loss_mask.sum(Kind::Float).clamp_min(1.0)
}

/// [`lm_loss`] with less padding computed: the rows sorted by length and taken in
/// `groups` groups of about equal size, each cut to its longest row and run through the
/// model on its own. The same masked sum over the same total (up to the order of float
/// additions): a right-padded row's real tokens see nothing past its end, so cutting
/// the padding changes no logit of a real token. On pre-training batches, where tune
/// lengths vary widely, a large share of the padded batch is padding.
pub fn lm_loss_grouped(model: &Transformer, batch: &LmBatch, train: bool, groups: usize) -> Tensor {
    if groups <= 1 {
        return lm_loss(model, batch, train);
    }
    let device = batch.input.device();
    let mut total: Option<Tensor> = None;
    for (group, t) in length_groups(batch, groups) {
        let idx = Tensor::from_slice(&group).to(device);
        let take = |x: &Tensor| x.index_select(0, &idx).narrow(1, 0, t);
        let part = masked_nll_sum(
            model,
            &take(&batch.input),
            &take(&batch.valid),
            batch.features.as_ref().map(take).as_ref(),
            &take(&batch.target),
            &take(&batch.loss_mask),
            train,
        );
        total = Some(match total {
            Some(sum) => sum + part,
            None => part,
        });
    }
    total.unwrap_or_else(|| Tensor::zeros([], (Kind::Float, device)))
        / batch.loss_mask.sum(Kind::Float).clamp_min(1.0)
}

/// The rows of `batch` by decreasing length in `groups` groups of about equal size, each
/// with its longest row's length: the shapes [`lm_loss_grouped`] runs.
pub fn length_groups(batch: &LmBatch, groups: usize) -> Vec<(Vec<i64>, i64)> {
    let lengths = Vec::<i64>::try_from(batch.valid.sum_dim_intlist(1, false, Kind::Int64))
        .unwrap_or_default();
    groups_by_length(&lengths, groups)
}

/// Row indices by decreasing `lengths` in `groups` groups of about equal size (the last
/// may be smaller), each with its longest row's length (at least 1).
pub fn groups_by_length(lengths: &[i64], groups: usize) -> Vec<(Vec<i64>, i64)> {
    let mut order: Vec<i64> = (0..lengths.len() as i64).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i as usize]));
    order
        .chunks(lengths.len().div_ceil(groups.max(1)).max(1))
        .map(|g| (g.to_vec(), lengths[g[0] as usize].max(1)))
        .collect()
}

/// The summed negative log-likelihood of the masked targets.
fn masked_nll_sum(
    model: &Transformer,
    input: &Tensor,
    valid: &Tensor,
    features: Option<&Tensor>,
    target: &Tensor,
    mask: &Tensor,
    train: bool,
) -> Tensor {
    let logits = model.forward(input, valid, features, None, train);
    let logp = logits.log_softmax(-1, Kind::Float);
    let nll = -logp.gather(2, &target.unsqueeze(2), false).squeeze_dim(2);
    (nll * mask).sum(Kind::Float)
}
