//! The quality judge (evaluation only, never a training reward): a classifier that reads
//! a tune's body with its headers stripped and predicts the attributes a prompt can name
//! (genre, origin, key and mode, meter). A tune's quality for a prompt is its adherence
//! (the mean probability of the attribute values the prompt names) times its structural
//! validity (the share of complete bars whose length fits the meter), in `[0, 1]`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

use crate::bars::check_bars;
use crate::caption::Attributes;
use crate::dataset::{Dataset, Split};
use crate::tune::{events, Token};
use crate::vocab::Vocab;
use model::checkpoint::{save, Checkpoint, ModelKind, Stamp};
use model::config::ModelConfig;
use model::optim::{AdamW, AdamWConfig};
use model::task::Score;
use model::train::{fit, Plan};
use model::transformer::Trunk;

/// Tokens of a tune the judge sees in one training example.
const TRAIN_WINDOW: usize = 128;

/// The attributes the judge predicts.
pub const JUDGED: [&str; 4] = ["genre", "origin", "key", "meter"];

/// The value of a judged attribute.
pub fn attribute(a: &Attributes, name: &str) -> Option<String> {
    match name {
        "genre" => a.genre.clone(),
        "origin" => a.origin.clone(),
        "key" => Some(a.key.clone()),
        "meter" => Some(a.meter.clone()),
        _ => None,
    }
}

/// The judged attribute values a caption names (a value is named when its words appear
/// in the caption).
pub fn named(caption: &str, a: &Attributes) -> Vec<(usize, String)> {
    let words = format!(" {} ", crate::caption::prompt_words(caption).join(" "));
    JUDGED
        .iter()
        .enumerate()
        .filter_map(|(i, n)| attribute(a, n).map(|v| (i, v)))
        .filter(|(_, v)| {
            words.contains(&format!(" {} ", crate::caption::prompt_words(v).join(" ")))
        })
        .collect()
}

/// The judge: encoder trunk under `encoder.`, one linear head per attribute.
#[derive(Debug)]
pub struct TuneJudge {
    trunk: Trunk,
    heads: Vec<nn::Linear>,
    /// Class names per attribute, in [`JUDGED`] order.
    pub classes: Vec<Vec<String>>,
}

impl TuneJudge {
    pub fn new(vs: &nn::Path, c: &ModelConfig, classes: Vec<Vec<String>>) -> TuneJudge {
        let heads = JUDGED
            .iter()
            .zip(&classes)
            .map(|(n, cl)| {
                nn::linear(
                    vs / "heads" / *n,
                    c.d_model,
                    cl.len().max(1) as i64,
                    Default::default(),
                )
            })
            .collect();
        TuneJudge {
            trunk: Trunk::new(&(vs / "encoder"), c),
            heads,
            classes,
        }
    }

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

    /// Log-probabilities per attribute, each `[B, classes]`.
    pub fn log_probs(&self, bodies: &[&[u32]], train: bool) -> Vec<Tensor> {
        let h = self.trunk.pooled(bodies, train);
        self.heads
            .iter()
            .map(|l| h.apply(l).log_softmax(-1, Kind::Float))
            .collect()
    }

    /// Class index of a value of attribute `i`.
    pub fn class(&self, i: usize, value: &str) -> Option<usize> {
        self.classes[i].iter().position(|c| c == value)
    }

    /// Quality of each tune (`ids`: tokens with headers) for the attribute values its
    /// prompt names: adherence × share of fitting complete bars.
    pub fn quality(
        &self,
        vocab: &Vocab,
        tunes: &[&[u32]],
        named: &[Vec<(usize, String)>],
    ) -> Result<Vec<f64>, tch::TchError> {
        Ok(self
            .scores(vocab, tunes, named)?
            .iter()
            .map(Score::quality)
            .collect())
    }

    /// Both factors of the quality of each tune: adherence (the mean probability of the
    /// attribute values the prompt names, 1 if it names none) and validity (the share of
    /// complete bars whose length fits the meter).
    pub fn scores(
        &self,
        vocab: &Vocab,
        tunes: &[&[u32]],
        named: &[Vec<(usize, String)>],
    ) -> Result<Vec<Score>, tch::TchError> {
        let bodies: Vec<&[u32]> = tunes.iter().map(|t| vocab.body(t)).collect();
        let lp = tch::no_grad(|| self.log_probs(&bodies, false));
        let lp: Vec<Vec<Vec<f32>>> = lp
            .iter()
            .map(|t| Vec::<Vec<f32>>::try_from(&t.to_device(Device::Cpu)))
            .collect::<Result<_, _>>()?;
        Ok(tunes
            .iter()
            .enumerate()
            .map(|(row, ids)| {
                let probs: Vec<f64> = named[row]
                    .iter()
                    .map(|(i, v)| {
                        self.class(*i, v)
                            .map_or(0.0, |c| f64::from(lp[*i][row][c]).exp())
                    })
                    .collect();
                let adherence = if probs.is_empty() {
                    1.0
                } else {
                    probs.iter().sum::<f64>() / probs.len() as f64
                };
                Score {
                    adherence,
                    validity: bar_validity(vocab, ids),
                }
            })
            .collect())
    }
}

/// Share of complete bars whose length fits the meter (0 for a malformed token sequence
/// or one without a meter).
pub fn bar_validity(vocab: &Vocab, ids: &[u32]) -> f64 {
    let Ok(tokens) = vocab.decode_tune(ids) else {
        return 0.0;
    };
    let Some(Token::Meter(m)) = tokens.first() else {
        return 0.0;
    };
    match events(&tokens) {
        Ok(ev) => check_bars(&ev, *m).fit_share(),
        Err(_) => 0.0,
    }
}

/// Settings of `qd judge train`.
#[derive(Clone, Debug)]
pub struct JudgeConfig {
    pub data: PathBuf,
    pub out: PathBuf,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
    pub device: Device,
    pub progress: bool,
}

/// What `qd judge train` reports.
#[derive(Clone, Debug)]
pub struct JudgeReport {
    pub checkpoint: PathBuf,
    /// Validation accuracy per attribute (over tunes whose value is known).
    pub val_accuracy: Vec<(String, f64)>,
    pub seconds: f64,
}

/// Class index targets `[B]` per attribute (-100 where unknown).
fn targets(judge: &TuneJudge, records: &[&crate::dataset::Record], device: Device) -> Vec<Tensor> {
    (0..JUDGED.len())
        .map(|i| {
            let t: Vec<i64> = records
                .iter()
                .map(|r| {
                    attribute(&r.attributes, JUDGED[i])
                        .and_then(|v| judge.class(i, &v))
                        .map_or(-100, |c| c as i64)
                })
                .collect();
            Tensor::from_slice(&t).to(device)
        })
        .collect()
}

fn accuracy(judge: &TuneJudge, ds: &Dataset, split: Split, device: Device) -> Vec<(String, f64)> {
    let records: Vec<_> = ds.split(split).collect();
    let mut hits = [0.0f64; 4];
    let mut counts = [0.0f64; 4];
    tch::no_grad(|| {
        for chunk in records.chunks(64) {
            let bodies: Vec<&[u32]> = chunk.iter().map(|r| ds.vocab.body(&r.tune)).collect();
            let lp = judge.log_probs(&bodies, false);
            for (i, t) in targets(judge, chunk, device).iter().enumerate() {
                let known = t.ne(-100);
                hits[i] += lp[i]
                    .argmax(1, false)
                    .eq_tensor(t)
                    .logical_and(&known)
                    .sum(Kind::Float)
                    .double_value(&[]);
                counts[i] += known.sum(Kind::Float).double_value(&[]);
            }
        }
    });
    JUDGED
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.to_string(),
                if counts[i] > 0.0 {
                    hits[i] / counts[i]
                } else {
                    f64::NAN
                },
            )
        })
        .collect()
}

/// Trains the judge and writes its checkpoint (the class lists go in its metadata).
pub fn train_judge(cfg: &JudgeConfig) -> Result<JudgeReport> {
    let ds = Dataset::load(&cfg.data)?;
    let train = ds.train_records(&cfg.data)?;
    let mut classes: Vec<Vec<String>> = vec![Vec::new(); JUDGED.len()];
    for r in &train {
        for (i, n) in JUDGED.iter().enumerate() {
            if let Some(v) = attribute(&r.attributes, n) {
                if !classes[i].contains(&v) {
                    classes[i].push(v);
                }
            }
        }
    }
    classes.iter_mut().for_each(|c| c.sort());
    tch::manual_seed(cfg.seed as i64);
    let vs = VarStore::new(cfg.device);
    let config = TuneJudge::default_config(ds.vocab.len());
    let judge = TuneJudge::new(&vs.root(), &config, classes);
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let start = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    fit(
        &mut opt,
        &Plan::encoder(cfg.lr, cfg.steps, cfg.progress),
        |_| {
            let picks: Vec<_> = (0..cfg.batch_size)
                .map(|_| train[rng.gen_range(0..train.len())])
                .collect();
            // Random windows keep batches short; the attributes show in any stretch of a
            // tune.
            let bodies: Vec<&[u32]> = picks
                .iter()
                .map(|r| {
                    let b = ds.vocab.body(&r.tune);
                    let start = rng.gen_range(0..=b.len().saturating_sub(TRAIN_WINDOW));
                    &b[start..b.len().min(start + TRAIN_WINDOW)]
                })
                .collect();
            let lp = judge.log_probs(&bodies, true);
            let loss = lp
                .iter()
                .zip(targets(&judge, &picks, cfg.device))
                .map(|(l, t)| {
                    l.nll_loss_nd::<Tensor>(&t, None, tch::Reduction::Mean, -100)
                        .nan_to_num(0.0, None, None)
                })
                .fold(Tensor::zeros([], (Kind::Float, cfg.device)), |a, b| a + b);
            (loss, ())
        },
        |s, (), _| Ok(format!("loss {:.3}", s.loss)),
    )?;
    let val_accuracy = accuracy(&judge, &ds, Split::Val, cfg.device);
    tracing::info!(?val_accuracy, "judge trained");
    let extra = serde_json::json!({ "classes": judge.classes, "val_accuracy": val_accuracy });
    let vocab_hash = ds.vocab.hash();
    let stamp = Stamp::offline(ModelKind::Judge, &config, &vocab_hash, cfg.steps, extra);
    save(&cfg.out, &vs, None, stamp)?;
    Ok(JudgeReport {
        checkpoint: cfg.out.clone(),
        val_accuracy,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Loads a judge checkpoint for the dataset's vocabulary.
pub fn load_judge(path: &Path, vocab: &Vocab, device: Device) -> Result<(VarStore, TuneJudge)> {
    let ck = Checkpoint::read_for(path, ModelKind::Judge, &vocab.hash())?;
    let classes: Vec<Vec<String>> =
        serde_json::from_value(ck.meta.extra.get("classes").cloned().unwrap_or_default())
            .with_context(|| format!("{} lacks the judge's class lists", path.display()))?;
    let mut vs = VarStore::new(device);
    let judge = TuneJudge::new(&vs.root(), &ck.meta.config, classes);
    ck.load_into(&mut vs)?;
    Ok((vs, judge))
}
