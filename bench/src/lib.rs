//! qd's benchmarks (`qd bench …`): generation with and without CFG against PyTorch
//! ([`generate`], which also runs the PyTorch references beside qd), the learner step
//! and the pre-training step against PyTorch ([`learner`], [`pretrain`]), how the cost
//! grows ([`scaling`]), the running service ([`service`]) and the fault campaign
//! ([`faults`]); and what the step benchmarks share: FLOPs counted from the shapes,
//! this machine's matrix-product rate.

use std::time::Instant;

pub use generate::interleaved;
use generate::{median, Reference};
use tch::{Device, Kind, Tensor};

pub mod faults;
pub mod generate;
pub mod learner;
pub mod pretrain;
pub mod scaling;
pub mod service;

/// Forward FLOPs of `rows` right-padded rows of `t` positions: the matrix products of
/// every block (q, k, v and the projection: 4d² per position; the MLP: 2·d·d_ff),
/// attention (scores and the weighted sum over the positions before: 2·t·d per position
/// on average), and the head (d·V); each multiply-add counts 2.
pub(crate) fn forward_flop(c: &model::config::ModelConfig, rows: usize, t: usize) -> f64 {
    let (d, ff, v, l) = (
        c.d_model as f64,
        c.d_ff as f64,
        c.vocab_size as f64,
        c.n_layers as f64,
    );
    let per_position = l * (2.0 * (4.0 * d * d + 2.0 * d * ff) + 2.0 * t as f64 * d) + 2.0 * d * v;
    rows as f64 * t as f64 * per_position
}

/// Median GFLOP/s of float32 matrix products on `device` (1024×1024 on the CPU with the
/// current threads, 4096×4096 on a GPU).
fn gemm_peak_gflops(device: Device) -> f64 {
    let n = if device.is_cuda() { 4096 } else { 1024 };
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let a = Tensor::randn([n, n], (Kind::Float, device));
    let b = Tensor::randn([n, n], (Kind::Float, device));
    let _ = a.matmul(&b); // warm-up
    sync();
    let rates: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            let c = a.matmul(&b);
            sync();
            let s = start.elapsed().as_secs_f64();
            drop(c);
            2.0 * (n as f64).powi(3) / s / 1e9
        })
        .collect();
    median(rates)
}

/// Where a step benchmark's reference writes its first gradient (and the weights after
/// it), in the folder it was started with.
pub(crate) const REFERENCE_TENSORS: &str = "tensors.safetensors";

/// Starts a step benchmark's PyTorch reference `script`: the batch `request` is written
/// into `dir` (`--request`), the first step's tensors are to go to [`REFERENCE_TENSORS`]
/// there (`--tensors-out`), and `args` are its own. It runs the compared first step at
/// once, and its first line (loss, gradient norm) comes back with it; it then times a
/// step at each `step` command.
pub(crate) fn start_reference(
    python: &std::path::Path,
    script: &std::path::Path,
    dir: &std::path::Path,
    request: &serde_json::Value,
    args: &[&std::ffi::OsStr],
) -> anyhow::Result<(Reference, serde_json::Value)> {
    let path = dir.join("request.json");
    std::fs::write(&path, serde_json::to_vec(request)?)?;
    let mut command = std::process::Command::new(python);
    command
        .arg(script)
        .args(args)
        .arg("--request")
        .arg(path)
        .arg("--tensors-out")
        .arg(dir.join(REFERENCE_TENSORS))
        .args(["--threads", &tch::get_num_threads().to_string()]);
    Reference::start(command)
}

/// A step's time and arithmetic rate against this machine's matrix-product rate, and
/// the PyTorch reference's time beside it (flattened into the step benchmarks' reports).
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepRate {
    pub qd_step_seconds: f64,
    /// Floating-point operations of one step over the padded rows, counted from the
    /// shapes (a backward at twice a forward; matrix products and attention only): what
    /// the reference computes.
    pub padded_gflop: f64,
    /// The same over the row groups of similar length qd computes.
    pub step_gflop: f64,
    /// `step_gflop / qd_step_seconds`.
    pub qd_gflops: f64,
    /// This machine's float32 matrix-product rate with the same threads, and the step's
    /// share of it.
    pub gemm_peak_gflops: f64,
    pub share_of_peak: f64,
    pub torch_step_seconds: Option<f64>,
    /// PyTorch's step time over qd's (above 1: qd is faster).
    pub qd_speedup: Option<f64>,
}

impl StepRate {
    /// qd's side; measures the matrix-product rate on `device`.
    pub(crate) fn new(
        qd_step_seconds: f64,
        padded_gflop: f64,
        step_gflop: f64,
        device: Device,
    ) -> StepRate {
        let gemm_peak_gflops = gemm_peak_gflops(device);
        let qd_gflops = step_gflop / qd_step_seconds;
        StepRate {
            qd_step_seconds,
            padded_gflop,
            step_gflop,
            qd_gflops,
            gemm_peak_gflops,
            share_of_peak: qd_gflops / gemm_peak_gflops,
            torch_step_seconds: None,
            qd_speedup: None,
        }
    }

    /// The reference's median step time, beside qd's.
    pub(crate) fn against(&mut self, torch_step_seconds: f64) {
        self.torch_step_seconds = Some(torch_step_seconds);
        self.qd_speedup = Some(torch_step_seconds / self.qd_step_seconds);
    }

    /// The table lines: the work and its rate, then the two step times and their ratio.
    pub(crate) fn lines(&self, groups: usize) -> String {
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_string(), f);
        format!(
            "{:.2} GFLOP a step over the padded rows, {:.2} in qd's {groups} length groups: \
             qd {:.2} GFLOP/s, {:.0}% of this machine's {:.1} GFLOP/s float32 matrix products\n\
             {:<34}{:>12}\n{:<34}{:>12}\n{:<34}{:>12}\n",
            self.padded_gflop,
            self.step_gflop,
            self.qd_gflops,
            100.0 * self.share_of_peak,
            self.gemm_peak_gflops,
            "qd step (s)",
            format!("{:.4}", self.qd_step_seconds),
            "PyTorch eager step (s)",
            opt(self.torch_step_seconds, &|v| format!("{v:.4}")),
            "qd speed-up over PyTorch",
            opt(self.qd_speedup, &|v| format!("{v:.2}x")),
        )
    }
}

/// The tensor `key` a reference wrote, checked to have `like`'s shape.
pub(crate) fn reference_tensor<'a>(
    theirs: &'a std::collections::HashMap<String, Tensor>,
    key: &str,
    like: &Tensor,
) -> anyhow::Result<&'a Tensor> {
    use anyhow::Context;
    let t = theirs
        .get(key)
        .with_context(|| format!("the reference wrote no {key}"))?;
    anyhow::ensure!(
        t.size() == like.size(),
        "{key}: shape {:?}, qd has {:?}",
        t.size(),
        like.size()
    );
    Ok(t)
}

/// A tensor's difference is relative to its own scale, but never to less than this share
/// of the largest scale of the set: a tensor whose values are float noise around 0 is
/// compared at the set's noise level.
const REL_FLOOR: f64 = 1e-3;

/// How far `ours` is from the reference's `<prefix><name>` tensors, tensor by tensor:
/// the largest over the tensors of `max |ours − ref| / max |ref|` (the scale floored at
/// [`REL_FLOOR`] of the largest), the tensor where it is, and the largest `max |ref|`.
pub(crate) fn rel_diff(
    ours: &[(String, Tensor)],
    theirs: &std::collections::HashMap<String, Tensor>,
    prefix: &str,
) -> anyhow::Result<(f64, String, f64)> {
    let max = |t: Tensor| f64::try_from(t.max().to_kind(Kind::Double));
    let mut per = Vec::with_capacity(ours.len());
    for (name, a) in ours {
        let t = reference_tensor(theirs, &format!("{prefix}{name}"), a)?;
        per.push((name, max((a - t).abs())?, max(t.abs())?));
    }
    let scale = per.iter().map(|p| p.2).fold(0f64, f64::max);
    let floor = (REL_FLOOR * scale).max(f64::MIN_POSITIVE);
    let (rel, worst) = per
        .iter()
        .map(|(name, diff, own)| (diff / own.max(floor), (*name).clone()))
        .fold((0f64, String::new()), |a, b| if b.0 > a.0 { b } else { a });
    Ok((rel, worst, scale))
}
