//! Training sequences `[prompt] <sep> [tune] <eos>`, right-padded, with the loss on the
//! tune tokens and `<eos>` only; and the language-model loss.

use tch::{Device, Kind, Tensor};

use crate::sampling::Vocabulary;
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
    let shape = [b as i64, t as i64];
    LmBatch {
        input: Tensor::from_slice(&input).view(shape).to(device),
        valid: Tensor::from_slice(&valid).view(shape).to(device),
        target: Tensor::from_slice(&target).view(shape).to(device),
        loss_mask: Tensor::from_slice(&mask).view(shape).to(device),
    }
}

/// Mean cross-entropy over the masked targets.
pub fn lm_loss(model: &Transformer, batch: &LmBatch, train: bool) -> Tensor {
    let logits = model.forward(&batch.input, &batch.valid, None, train);
    let logp = logits.log_softmax(-1, Kind::Float);
    let nll = -logp
        .gather(2, &batch.target.unsqueeze(2), false)
        .squeeze_dim(2);
    (nll * &batch.loss_mask).sum(Kind::Float) / batch.loss_mask.sum(Kind::Float).clamp_min(1.0)
}
