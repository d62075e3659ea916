//! `qd bench pretrain`: one pre-training step (the masked cross-entropy's forward and
//! backward, clipping to the global norm, AdamW) on a fixed batch of `qd pretrain`'s,
//! timed against a PyTorch-eager reference of the same step
//! (`scripts/reference_pretrain.py`) that loads the same weights and batch, and checked
//! against it: the loss and the gradient, tensor by tensor.
//!
//! Both run with dropout off: the reference's module (`scripts/qd_model.py`, what `qd
//! export` ships) has none, and only without it are the two computations the same. qd
//! computes the loss as pre-training does, in groups of rows of similar length
//! (`folk::pretrain::LENGTH_GROUPS`), the reference over the padded batch in one pass:
//! the same loss, less padding computed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use folk::dataset::Dataset;
use folk::pretrain::{model_config, pretrain_loss, train_step, BatchSampler, LENGTH_GROUPS};
use model::batch::length_groups;
use model::checkpoint::{save, Checkpoint, ModelKind, Stamp};
use model::config::Preset;
use model::optim::{AdamW, AdamWConfig};
use model::transformer::Transformer;

use super::{forward_flop, interleaved, rel_diff, start_reference, StepRate, REFERENCE_TENSORS};

/// What to measure.
#[derive(Clone, Debug)]
pub struct PretrainBenchConfig {
    /// Where both qd and the reference run.
    pub device: Device,
    /// The prepared dataset (the batch is `qd pretrain`'s first, seed 0).
    pub data: PathBuf,
    /// Weights to start from (`None`: a fresh `preset` model; speed does not depend on
    /// the weights).
    pub checkpoint: Option<PathBuf>,
    pub preset: Preset,
    pub batch_size: usize,
    /// Tokens per training row (`qd pretrain --context`).
    pub context: usize,
    pub lr: f64,
    pub clip: f64,
    pub reps: usize,
    /// Python with torch, to run the reference (`None`: skip it).
    pub python: Option<PathBuf>,
    pub script: PathBuf,
}

/// Median step seconds, and how far the reference's numbers are from qd's.
#[derive(Clone, Debug, Serialize)]
pub struct PretrainBenchReport {
    pub params: i64,
    pub rows: usize,
    /// Positions of the padded batch.
    pub positions: usize,
    /// Real (not padding) input tokens.
    pub tokens: usize,
    pub reps: usize,
    pub threads: i32,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// The step's time and rate, against PyTorch's.
    #[serde(flatten)]
    pub rate: StepRate,
    pub qd_loss: f64,
    pub qd_grad_norm: f64,
    pub torch_loss: Option<f64>,
    pub torch_grad_norm: Option<f64>,
    /// |loss_qd − loss_torch| of the first step.
    pub loss_diff: Option<f64>,
    /// The gradient's largest relative difference, tensor by tensor
    /// (`max |g_qd − g_torch| / max |g_torch|` per weight).
    pub grad_rel_diff: Option<f64>,
    /// The weight where it is.
    pub grad_worst: Option<String>,
}

/// Runs the benchmark on `cfg.device` (on the CPU with the current libtorch threads).
pub fn bench_pretrain(cfg: &PretrainBenchConfig) -> Result<PretrainBenchReport> {
    let device = cfg.device;
    let ds = Dataset::load(&cfg.data)?;
    let train = ds.train_records(&cfg.data)?;
    let vocab_hash = ds.vocab.hash();
    let vocabulary = folk::task::vocabulary(&ds.vocab);
    let (vs, model, config) = match &cfg.checkpoint {
        Some(path) => {
            let ck = Checkpoint::read_for(path, ModelKind::Policy, &vocab_hash)?;
            let mut vs = VarStore::new(device);
            let model = Transformer::new(&vs.root(), &ck.meta.config);
            ck.load_into(&mut vs)?;
            (vs, model, ck.meta.config.clone())
        }
        None => {
            tch::manual_seed(0);
            let config = model_config(cfg.preset, &ds.vocab, cfg.context, true);
            config.validate().map_err(anyhow::Error::msg)?;
            let vs = VarStore::new(device);
            let model = Transformer::new(&vs.root(), &config);
            (vs, model, config)
        }
    };
    // The reference loads the same weights from a checkpoint file.
    let dir = tempfile::tempdir()?;
    let weights = dir.path().join("weights.safetensors");
    save(
        &weights,
        &vs,
        None,
        Stamp {
            kind: ModelKind::Policy,
            config: &config,
            vocab_hash: &vocab_hash,
            step: 0,
            version: 0,
            extra: serde_json::Value::Null,
        },
    )?;
    let sampler = BatchSampler {
        ds: &ds,
        train: &train,
        vocabulary: &vocabulary,
        batch_size: cfg.batch_size,
        cond_dropout: 0.15,
        max_len: config.max_len as usize - 1,
        remi: None,
        seed: 0,
        device,
    };
    let batch = sampler.batch(0);
    let (rows, positions) = batch.input.size2()?;
    let tokens = batch.valid.sum(Kind::Int64).int64_value(&[]) as usize;
    let mut opt = AdamW::new(&vs, AdamWConfig::default());

    // The first step is the compared one: keep its gradient.
    opt.zero_grad();
    let loss = pretrain_loss(&model, &batch, false);
    loss.backward();
    let grads: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.grad().copy()))
        .collect();
    let qd_grad_norm = opt.clip_grad_norm(cfg.clip);
    opt.step(cfg.lr);
    let qd_loss = loss.double_value(&[]);
    let device_name = match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    // The reference starts now (it runs the compared first step at once), so that its
    // timed steps can alternate with qd's.
    let mut reference = match &cfg.python {
        None => None,
        Some(python) => {
            let flat_i64 = |t: &Tensor| Vec::<i64>::try_from(t.flatten(0, -1).to_kind(Kind::Int64));
            let adamw = AdamWConfig::default();
            let body = serde_json::json!({
                "shape": [rows, positions],
                "input": flat_i64(&batch.input)?,
                "valid": flat_i64(&batch.valid)?,
                "target": flat_i64(&batch.target)?,
                "loss_mask": flat_i64(&batch.loss_mask)?,
                "sep": vocabulary.sep,
                "structure": config.structure.as_ref().map(|_| folk::metrical::python_port(&ds.vocab)),
                "optimizer": {
                    "lr": cfg.lr, "grad_clip": cfg.clip, "weight_decay": adamw.weight_decay,
                    "beta1": adamw.beta1, "beta2": adamw.beta2, "eps": adamw.eps,
                },
            });
            let args = [
                "--weights".as_ref(),
                weights.as_os_str(),
                "--device".as_ref(),
                device_name.as_ref(),
            ];
            Some(start_reference(
                python,
                &cfg.script,
                dir.path(),
                &body,
                &args,
            )?)
        }
    };
    let one_step = || {
        let start = Instant::now();
        train_step(&model, &mut opt, &batch, cfg.clip, cfg.lr, false);
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
        Ok(start.elapsed().as_secs_f64())
    };
    let (qd_step_seconds, torch_step_seconds) = interleaved(
        cfg.reps,
        "step",
        one_step,
        reference.as_mut().map(|(r, _)| r),
    )?;
    // A forward and a backward at twice the forward.
    let mut rate = StepRate::new(
        qd_step_seconds,
        3.0 * forward_flop(&config, rows as usize, positions as usize) / 1e9,
        length_groups(&batch, LENGTH_GROUPS)
            .iter()
            .map(|(g, t)| 3.0 * forward_flop(&config, g.len(), *t as usize) / 1e9)
            .sum::<f64>(),
        device,
    );
    if let Some(t) = torch_step_seconds {
        rate.against(t);
    }
    let mut report = PretrainBenchReport {
        params: vs.variables().values().map(Tensor::numel).sum::<usize>() as i64,
        rows: rows as usize,
        positions: positions as usize,
        tokens,
        reps: cfg.reps,
        threads: tch::get_num_threads(),
        device: device_name,
        rate,
        qd_loss,
        qd_grad_norm,
        torch_loss: None,
        torch_grad_norm: None,
        loss_diff: None,
        grad_rel_diff: None,
        grad_worst: None,
    };
    let Some((r, out)) = reference else {
        return Ok(report);
    };
    r.finish()?;
    report.torch_loss = out["loss"].as_f64();
    report.torch_grad_norm = out["grad_norm"].as_f64();
    report.loss_diff = report.torch_loss.map(|t| (t - qd_loss).abs());
    let theirs: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join(REFERENCE_TENSORS))?
            .into_iter()
            .collect();
    let (rel, worst, _) = rel_diff(&grads, &theirs, "grad.")?;
    report.grad_rel_diff = Some(rel);
    report.grad_worst = Some(worst);
    Ok(report)
}

impl PretrainBenchReport {
    /// The report as a table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_string(), f);
        format!(
            "pre-training step on {}: {} parameters, {} rows × {} positions ({} tokens), dropout off, \
             {} threads, median of {} steps\n\
             {}\
             loss qd {:.6}  torch {}  |diff| {}\n\
             gradient max |diff| / max |g|, the worst weight  {} ({})\n",
            self.device,
            self.params,
            self.rows,
            self.positions,
            self.tokens,
            self.threads,
            self.reps,
            self.rate.lines(LENGTH_GROUPS),
            self.qd_loss,
            opt(self.torch_loss, &|v| format!("{v:.6}")),
            opt(self.loss_diff, &|v| format!("{v:.2e}")),
            opt(self.grad_rel_diff, &|v| format!("{v:.2e}")),
            self.grad_worst.as_deref().unwrap_or("-"),
        )
    }
}
