//! The benchmarks of the binary: the learner step and the pre-training step against
//! PyTorch ([`learner`], [`pretrain`]), how the cost grows ([`scaling`]), the running
//! service ([`service`]) and the fault campaign ([`faults`]); and what the step
//! benchmarks share: FLOPs counted from the shapes, this machine's matrix-product rate,
//! running a PyTorch reference.

use std::time::Instant;

use eval::bench::median;
use tch::{Device, Kind, Tensor};

pub mod faults;
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
pub(crate) fn gemm_peak_gflops(device: Device) -> f64 {
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

/// A PyTorch reference script of a step benchmark and what every such script takes: the
/// batch (`--request`), where to write its first gradient (`--tensors-out`), the timed
/// repetitions and the threads.
pub(crate) struct Reference<'a> {
    pub python: &'a std::path::Path,
    pub script: &'a std::path::Path,
    pub request: &'a std::path::Path,
    pub tensors: &'a std::path::Path,
    pub reps: usize,
    pub threads: i32,
}

/// Runs the reference with its own `args` too and reads the one JSON object it prints.
pub(crate) fn run_reference(
    r: &Reference<'_>,
    args: &[&std::ffi::OsStr],
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let (python, script) = (r.python, r.script);
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .arg("--request")
        .arg(r.request)
        .arg("--tensors-out")
        .arg(r.tensors)
        .args(["--reps", &r.reps.to_string()])
        .args(["--threads", &r.threads.to_string()])
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "the PyTorch reference failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the reference's JSON")
}

/// The median of the `seconds` a reference reported.
pub(crate) fn median_seconds(report: &serde_json::Value) -> f64 {
    median(
        report["seconds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_f64)
            .collect(),
    )
}
