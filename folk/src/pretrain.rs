//! `qd pretrain`: maximum likelihood on the training split with condition dropout (so
//! that CFG works), fresh captions drawn from each tune's attributes every time it is
//! seen, AdamW, linear warm-up then cosine decay, gradient clipping, validation loss
//! every N steps, and checkpoints it resumes from after an interruption.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::caption::caption;
use crate::dataset::{Dataset, Record, Split};
use crate::metrical::Metrical;
use crate::remi::{Remi, RemiTask};
use crate::vocab::Vocab;
use model::batch::{lm_batch, lm_loss_grouped, LmBatch};
use model::checkpoint::{save, Checkpoint, ModelKind, Stamp};
use model::config::{ModelConfig, Preset};
use model::optim::{AdamW, AdamWConfig};
use model::sampling::Vocabulary;
use model::structure::Structure;
use model::train::{descend, fit, Plan, Schedule};
use model::transformer::Transformer;

/// Settings of a pre-training run.
#[derive(Clone, Debug)]
pub struct PretrainConfig {
    pub data: PathBuf,
    /// Folder for `last.safetensors` (the run resumes from it when present).
    pub out: PathBuf,
    pub preset: Preset,
    /// Embed where each token falls in its bar (`crate::metrical`) beside the token.
    pub metrical: bool,
    /// Train on the REMI encoding instead (`crate::remi`: position tokens in the
    /// sequence, no metrical embedding): the alternative the metrical position is
    /// measured against.
    pub remi: bool,
    /// Total steps: the learning-rate schedule spans them.
    pub steps: u64,
    /// Stop after this step for now (a later run with the same settings continues).
    pub until: Option<u64>,
    pub batch_size: usize,
    /// Training sequences are cut to this many tokens (prompt, `<sep>`, tune, `<eos>`),
    /// and the model has this many positions (at most the preset's).
    pub context: usize,
    pub lr: f64,
    pub warmup: u64,
    pub clip: f64,
    /// Probability of training a tune with the empty prompt.
    pub cond_dropout: f64,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub seed: u64,
    pub device: Device,
    pub progress: bool,
}

/// What a run ends with.
#[derive(Clone, Debug)]
pub struct PretrainReport {
    pub checkpoint: PathBuf,
    pub steps: u64,
    /// Loss of the last training batch.
    pub train_loss: f64,
    /// Loss on the validation split at the last evaluation (NaN without validation tunes).
    pub val_loss: f64,
    pub seconds: f64,
}

/// The preset's architecture with exactly `context` learned positions (at most the
/// preset's): every position a sampler or the learner can reach was trained, so nothing
/// is ever generated from an untrained position embedding. With `metrical`, the policy
/// embeds where each token falls in its bar.
pub fn model_config(preset: Preset, vocab: &Vocab, context: usize, metrical: bool) -> ModelConfig {
    let mut c = preset.config(vocab.len());
    c.max_len = c.max_len.min(context as i64);
    c.structure = metrical.then(|| Metrical::new(vocab).spec());
    c
}

/// What a run trains on: the folk task's ids, or their REMI encoding.
struct Encoding {
    vocabulary: Vocabulary,
    vocab_size: usize,
    vocab_hash: String,
    remi: Option<Remi>,
}

impl Encoding {
    fn new(vocab: &Vocab, remi: bool) -> Encoding {
        if remi {
            let task_vocabulary = RemiTask::vocabulary_of(vocab);
            let r = Remi::new(vocab);
            Encoding {
                vocab_size: r.vocab_size(),
                vocab_hash: Remi::vocab_hash(vocab),
                vocabulary: task_vocabulary,
                remi: Some(r),
            }
        } else {
            Encoding {
                vocabulary: crate::task::vocabulary(vocab),
                vocab_size: vocab.len(),
                vocab_hash: vocab.hash(),
                remi: None,
            }
        }
    }
}

/// The mean validation loss over the whole validation split (captions as stored).
fn val_loss(
    model: &Transformer,
    ds: &Dataset,
    enc: &Encoding,
    batch_size: usize,
    device: Device,
) -> f64 {
    let val: Vec<_> = ds.split(Split::Val).collect();
    let (mut sum, mut n) = (0.0, 0);
    tch::no_grad(|| {
        for chunk in val.chunks(batch_size) {
            let tunes: Vec<Vec<u32>> = chunk
                .iter()
                .map(|r| encode(enc.remi.as_ref(), &r.tune))
                .collect();
            let ex: Vec<(&[u32], &[u32])> = chunk
                .iter()
                .zip(&tunes)
                .map(|(r, t)| (r.prompt.as_slice(), t.as_slice()))
                .collect();
            let b = lm_batch(
                &ex,
                &enc.vocabulary,
                (model.config.max_len - 1) as usize,
                device,
            );
            sum += pretrain_loss(model, &b, false).double_value(&[]) * chunk.len() as f64;
            n += chunk.len();
        }
    });
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// A tune's ids as a run trains on them.
fn encode(remi: Option<&Remi>, tune: &[u32]) -> Vec<u32> {
    match remi {
        Some(r) => r.encode(tune),
        None => tune.to_vec(),
    }
}

/// The training batches of a run: each depends only on (seed, step), so a resumed run
/// sees the same data.
#[derive(Debug)]
pub struct BatchSampler<'a> {
    pub ds: &'a Dataset,
    /// The training split.
    pub train: &'a [&'a Record],
    pub vocabulary: &'a Vocabulary,
    pub batch_size: usize,
    /// Probability of the empty prompt for a tune.
    pub cond_dropout: f64,
    /// Positions a training row may fill (the model's `max_len − 1`).
    pub max_len: usize,
    /// Trains on the REMI encoding of the tunes.
    pub remi: Option<&'a Remi>,
    pub seed: u64,
    pub device: Device,
}

impl BatchSampler<'_> {
    /// Step `step`'s batch: `batch_size` training tunes, each with a fresh caption of its
    /// attributes or, with probability `cond_dropout`, the empty prompt.
    pub fn batch(&self, step: u64) -> LmBatch {
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(self.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let picks: Vec<_> = self
            .train
            .choose_multiple(&mut rng, self.batch_size.min(self.train.len()))
            .collect();
        let prompts: Vec<Vec<u32>> = picks
            .iter()
            .map(|r| {
                if rng.gen_bool(self.cond_dropout) {
                    Vec::new()
                } else {
                    self.ds
                        .vocab
                        .encode_prompt(&caption(&r.attributes, &mut rng))
                        .0
                }
            })
            .collect();
        let tunes: Vec<Vec<u32>> = picks.iter().map(|r| encode(self.remi, &r.tune)).collect();
        let ex: Vec<(&[u32], &[u32])> = prompts
            .iter()
            .zip(&tunes)
            .map(|(p, t)| (p.as_slice(), t.as_slice()))
            .collect();
        lm_batch(&ex, self.vocabulary, self.max_len, self.device)
    }
}

/// Row groups of similar length the pre-training loss is computed in (less padding; the
/// same loss): on `qd bench pretrain`'s batch (16 tunes, small preset, 2 threads) a step
/// took 0.239 s in one group, 0.162 s in 2, 0.148 s in 3, 0.141 s in 4 and 0.140 s in 8.
pub const LENGTH_GROUPS: usize = 4;

/// The masked cross-entropy of `batch` (with dropout when `dropout`), computed in
/// [`LENGTH_GROUPS`] groups of rows of similar length.
pub fn pretrain_loss(model: &Transformer, batch: &LmBatch, dropout: bool) -> Tensor {
    lm_loss_grouped(model, batch, dropout, LENGTH_GROUPS)
}

/// One maximum-likelihood step on `batch`: the masked cross-entropy (with dropout when
/// `dropout`), then [`descend`] (clipping to the global norm `clip`, AdamW at `lr`).
/// Returns the loss and the gradient norm before clipping.
pub fn train_step(
    model: &Transformer,
    opt: &mut AdamW,
    batch: &LmBatch,
    clip: f64,
    lr: f64,
    dropout: bool,
) -> (f64, f64) {
    let loss = pretrain_loss(model, batch, dropout);
    let grad_norm = descend(opt, &loss, clip, lr);
    (loss.double_value(&[]), grad_norm)
}

/// Runs (or resumes) pre-training and returns the final checkpoint.
pub fn pretrain(cfg: &PretrainConfig) -> Result<PretrainReport> {
    let ds = Dataset::load(&cfg.data)?;
    let train = ds.train_records(&cfg.data)?;
    let enc = Encoding::new(&ds.vocab, cfg.remi);
    let mut model_cfg = model_config(
        cfg.preset,
        &ds.vocab,
        cfg.context,
        cfg.metrical && !cfg.remi,
    );
    model_cfg.vocab_size = enc.vocab_size as i64;
    model_cfg.validate().map_err(anyhow::Error::msg)?;
    let vocab_hash = enc.vocab_hash.clone();
    tch::manual_seed(cfg.seed as i64);
    let mut vs = VarStore::new(cfg.device);
    let model = Transformer::new(&vs.root(), &model_cfg);
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let last = cfg.out.join("last.safetensors");
    let mut step = 0;
    if last.exists() {
        let ck = Checkpoint::read_for(&last, ModelKind::Policy, &vocab_hash)?;
        ck.check_compatible(&model_cfg, &vocab_hash)
            .with_context(|| format!("resuming from {}", last.display()))?;
        ck.load_into(&mut vs)?;
        if let Some((s, state)) = ck.optimizer_state() {
            opt.load_state(s, &state).map_err(anyhow::Error::msg)?;
        }
        step = ck.meta.step;
        tracing::info!(step, checkpoint = %last.display(), "resuming pre-training");
    }
    let params: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    tracing::info!(preset = ?cfg.preset, metrical = model_cfg.structure.is_some(), remi = cfg.remi, params, train = train.len(), steps = cfg.steps, "pre-training");

    let plan = Plan {
        schedule: Schedule {
            lr: cfg.lr,
            warmup: cfg.warmup,
            steps: cfg.steps,
        },
        clip: cfg.clip,
        from: step,
        until: cfg.until.map_or(cfg.steps, |u| u.min(cfg.steps)),
        progress: cfg.progress,
    };
    let end = plan.until;
    let start = Instant::now();
    let max_len = model_cfg.max_len as usize - 1;
    let mut tokens_seen = 0usize;
    let mut val = f64::NAN;
    let mut train_loss = f64::NAN;
    let write = |step: u64, opt: &AdamW, val: f64| {
        let extra = serde_json::json!({"val_loss": val, "seed": cfg.seed});
        let stamp = Stamp::offline(ModelKind::Policy, &model_cfg, &vocab_hash, step, extra);
        save(&last, &vs, Some(opt), stamp)
    };
    let sampler = BatchSampler {
        ds: &ds,
        train: &train,
        vocabulary: &enc.vocabulary,
        batch_size: cfg.batch_size,
        cond_dropout: cfg.cond_dropout,
        max_len,
        remi: enc.remi.as_ref(),
        seed: cfg.seed,
        device: cfg.device,
    };
    let last_step = fit(
        &mut opt,
        &plan,
        |step| {
            let batch = sampler.batch(step);
            let tokens = batch.valid.sum(tch::Kind::Int64).int64_value(&[]) as usize;
            (pretrain_loss(&model, &batch, true), tokens)
        },
        |s, tokens, opt| {
            tokens_seen += tokens;
            train_loss = s.loss;
            if s.step % cfg.eval_every == 0 || s.step == end {
                val = val_loss(&model, &ds, &enc, 64, cfg.device);
                tracing::info!(
                    step = s.step,
                    train_loss = s.loss,
                    val_loss = val,
                    lr = s.lr,
                    grad_norm = s.grad_norm,
                    "eval"
                );
            }
            if s.step % cfg.checkpoint_every == 0 || s.step == end {
                write(s.step, opt, val)?;
            }
            let tps = tokens_seen as f64 / start.elapsed().as_secs_f64();
            Ok(format!(
                "loss {:.3} val {val:.3} lr {:.1e} {tps:.0} tok/s",
                s.loss, s.lr
            ))
        },
    )?;
    let step = last_step.map_or(step, |s| s.step);
    if !last.exists() {
        write(step, &opt, val)?;
    }
    Ok(PretrainReport {
        checkpoint: last,
        steps: step,
        train_loss,
        val_loss: val,
        seconds: start.elapsed().as_secs_f64(),
    })
}
