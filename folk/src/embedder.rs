//! The diversity embedder: a bidirectional encoder over a tune's body, mean-pooled and
//! projected to a unit vector, trained contrastively (InfoNCE) with two random crops of
//! the same tune as the positive pair, as the paper trains its music embedding. Frozen
//! during RL; `1 − cos` between two samples' embeddings is their diversity.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

use crate::dataset::{Dataset, Split};
use crate::vocab::{Vocab, EOS};
use model::checkpoint::{save, Checkpoint, ModelKind, Stamp};
use model::config::ModelConfig;
use model::optim::{AdamW, AdamWConfig};
use model::train::{fit, Plan};
use model::transformer::Trunk;

/// The embedder: encoder trunk under `encoder.`, projection `proj`.
#[derive(Debug)]
pub struct TuneEmbedder {
    trunk: Trunk,
    proj: nn::Linear,
    pub dim: i64,
}

impl TuneEmbedder {
    pub fn new(vs: &nn::Path, c: &ModelConfig, dim: i64) -> TuneEmbedder {
        TuneEmbedder {
            trunk: Trunk::new(&(vs / "encoder"), c),
            proj: nn::linear(vs / "proj", c.d_model, dim, Default::default()),
            dim,
        }
    }

    /// The architecture used by `qd embedder train`.
    pub fn default_config(vocab_size: usize) -> ModelConfig {
        ModelConfig {
            vocab_size: vocab_size as i64,
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            d_ff: 256,
            max_len: 256,
            dropout: 0.1,
            structure: None,
        }
    }

    /// Unit-norm embeddings `[B, dim]` of tune bodies (token ids without headers).
    pub fn embed(&self, bodies: &[&[u32]], train: bool) -> Tensor {
        let z = self.trunk.pooled(bodies, train).apply(&self.proj);
        &z / z.norm_scalaropt_dim(2, [1], true).clamp_min(1e-8)
    }
}

/// Unit embeddings `[B, dim]` of generated tunes: `<eos>` and the `M:`/`K:` headers are
/// stripped, as the embedder was trained on bodies.
pub fn embed_tunes(e: &TuneEmbedder, vocab: &Vocab, tunes: &[&[u32]]) -> Tensor {
    let stripped: Vec<Vec<u32>> = tunes
        .iter()
        .map(|t| t.iter().copied().filter(|&x| x != EOS).collect())
        .collect();
    let bodies: Vec<&[u32]> = stripped.iter().map(|t| vocab.body(t)).collect();
    tch::no_grad(|| e.embed(&bodies, false))
}

/// Settings of `qd embedder train`.
#[derive(Clone, Debug)]
pub struct EmbedderConfig {
    pub data: PathBuf,
    /// The checkpoint to write.
    pub out: PathBuf,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub dim: i64,
    /// Crop lengths are drawn from `[crop_min, crop_max]` tokens.
    pub crop_min: usize,
    pub crop_max: usize,
    /// InfoNCE temperature.
    pub tau: f64,
    pub seed: u64,
    pub device: Device,
    pub progress: bool,
}

/// A random contiguous crop of `body`.
fn crop<'a, R: Rng>(body: &'a [u32], min: usize, max: usize, rng: &mut R) -> &'a [u32] {
    let len = rng
        .gen_range(min.min(body.len())..=max.min(body.len()))
        .max(1.min(body.len()));
    let start = rng.gen_range(0..=body.len() - len);
    &body[start..start + len]
}

/// Symmetric InfoNCE loss of two views `[B, dim]`, and the share of rows whose other view
/// is the nearest in the batch.
fn info_nce(a: &Tensor, b: &Tensor, tau: f64) -> (Tensor, f64) {
    let logits = a.matmul(&b.tr()) / tau;
    let n = logits.size()[0];
    let target = Tensor::arange(n, (Kind::Int64, logits.device()));
    let loss = (logits.cross_entropy_for_logits(&target)
        + logits.tr().cross_entropy_for_logits(&target))
        / 2.0;
    let acc = logits
        .argmax(1, false)
        .eq_tensor(&target)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    (loss, acc)
}

/// Retrieval accuracy on a split: for batches of `batch` tunes, the share of crops whose
/// nearest neighbour among the other crops is the other crop of the same tune.
pub fn retrieval_accuracy(
    e: &TuneEmbedder,
    ds: &Dataset,
    split: Split,
    cfg: &EmbedderConfig,
) -> f64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed.wrapping_add(1));
    let bodies: Vec<&[u32]> = ds
        .split(split)
        .map(|r| ds.vocab.body(&r.tune))
        .filter(|b| b.len() >= 4)
        .collect();
    let (mut hits, mut n) = (0.0, 0.0);
    tch::no_grad(|| {
        for chunk in bodies.chunks(cfg.batch_size) {
            if chunk.len() < 2 {
                continue;
            }
            let v1: Vec<&[u32]> = chunk
                .iter()
                .map(|b| crop(b, cfg.crop_min, cfg.crop_max, &mut rng))
                .collect();
            let v2: Vec<&[u32]> = chunk
                .iter()
                .map(|b| crop(b, cfg.crop_min, cfg.crop_max, &mut rng))
                .collect();
            let (_, acc) = info_nce(&e.embed(&v1, false), &e.embed(&v2, false), cfg.tau);
            hits += acc * chunk.len() as f64;
            n += chunk.len() as f64;
        }
    });
    if n == 0.0 {
        f64::NAN
    } else {
        hits / n
    }
}

/// What `qd embedder train` reports.
#[derive(Clone, Debug)]
pub struct EmbedderReport {
    pub checkpoint: PathBuf,
    pub val_retrieval: f64,
    pub seconds: f64,
}

/// Trains the embedder and writes its checkpoint.
pub fn train_embedder(cfg: &EmbedderConfig) -> Result<EmbedderReport> {
    let ds = Dataset::load(&cfg.data)?;
    let bodies: Vec<&[u32]> = ds
        .split(Split::Train)
        .map(|r| ds.vocab.body(&r.tune))
        .filter(|b| b.len() >= 4)
        .collect();
    if bodies.len() < 2 {
        bail!(
            "the dataset in {} has too few training tunes",
            cfg.data.display()
        );
    }
    tch::manual_seed(cfg.seed as i64);
    let vs = VarStore::new(cfg.device);
    let config = TuneEmbedder::default_config(ds.vocab.len());
    let e = TuneEmbedder::new(&vs.root(), &config, cfg.dim);
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let start = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    fit(
        &mut opt,
        &Plan::encoder(cfg.lr, cfg.steps, cfg.progress),
        |_| {
            let picks: Vec<&[u32]> = (0..cfg.batch_size.min(bodies.len()))
                .map(|_| bodies[rng.gen_range(0..bodies.len())])
                .collect();
            let mut views = || -> Vec<&[u32]> {
                picks
                    .iter()
                    .map(|&b| crop(b, cfg.crop_min, cfg.crop_max, &mut rng))
                    .collect()
            };
            let (v1, v2) = (views(), views());
            info_nce(&e.embed(&v1, true), &e.embed(&v2, true), cfg.tau)
        },
        |s, acc, _| Ok(format!("loss {:.3} batch retrieval {acc:.2}", s.loss)),
    )?;
    let val_retrieval = retrieval_accuracy(&e, &ds, Split::Val, cfg);
    tracing::info!(val_retrieval, "embedder trained");
    let extra = serde_json::json!({ "dim": cfg.dim, "val_retrieval": val_retrieval });
    let vocab_hash = ds.vocab.hash();
    let stamp = Stamp::offline(ModelKind::Embedder, &config, &vocab_hash, cfg.steps, extra);
    save(&cfg.out, &vs, None, stamp)?;
    Ok(EmbedderReport {
        checkpoint: cfg.out.clone(),
        val_retrieval,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Loads an embedder checkpoint for the dataset's vocabulary.
pub fn load_embedder(
    path: &Path,
    vocab: &Vocab,
    device: Device,
) -> Result<(VarStore, TuneEmbedder)> {
    let ck = Checkpoint::read_for(path, ModelKind::Embedder, &vocab.hash())?;
    let dim = ck
        .meta
        .extra
        .get("dim")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(64);
    let mut vs = VarStore::new(device);
    let e = TuneEmbedder::new(&vs.root(), &ck.meta.config, dim);
    ck.load_into(&mut vs)?;
    Ok((vs, e))
}
