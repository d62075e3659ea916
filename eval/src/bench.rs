//! `qd bench generate`: tokens per second of batched generation with and without CFG for
//! the same model, prompts and batch, measured side by side (interleaved repetitions,
//! medians), and the same against a PyTorch-eager reference of the architecture
//! (`scripts/reference_generate.py`) that loads the same checkpoint.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use model::sampling::{guided_logprobs, sample, SamplingConfig, Vocabulary};
use model::task::{Split, Task};
use model::transformer::Transformer;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub batch: usize,
    /// Tokens generated per row (`<eos>` is disallowed, so every row runs the full length).
    pub new_tokens: usize,
    pub reps: usize,
    pub cfg_gamma: f64,
    /// Python with torch, to run the reference (`None`: skip it).
    pub python: Option<PathBuf>,
    pub script: PathBuf,
}

/// Medians in tokens per second.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub batch: usize,
    pub new_tokens: usize,
    pub reps: usize,
    pub threads: i32,
    pub qd_plain: f64,
    pub qd_cfg: f64,
    /// CFG throughput over plain throughput (about 0.5 when CFG doubles the work).
    pub cfg_over_plain: f64,
    pub torch_plain: Option<f64>,
    pub torch_cfg: Option<f64>,
    pub qd_over_torch_plain: Option<f64>,
    pub qd_over_torch_cfg: Option<f64>,
    /// Largest |Δ log p| between qd and the reference over every allowed id, step and row,
    /// both fed the tokens qd sampled, same weights: plain, and with CFG.
    pub max_logprob_diff: Option<f64>,
    pub max_logprob_diff_cfg: Option<f64>,
}

/// The median (the upper one of an even count; NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Runs the benchmark on `checkpoint` (the reference reads the same file).
pub fn bench_generate(
    model: &Transformer,
    checkpoint: &Path,
    task: &dyn Task,
    cfg: &BenchConfig,
) -> Result<BenchReport> {
    let prompts: Vec<Vec<u32>> = task
        .prompts(Split::Test)
        .into_iter()
        .chain(task.prompts(Split::Train))
        .take(cfg.batch)
        .map(|p| p.ids)
        .collect();
    if prompts.len() < cfg.batch {
        bail!("the task has fewer than {} prompts", cfg.batch);
    }
    let task_vocabulary = task.vocabulary();
    let allowed: Vec<u32> = task_vocabulary
        .allowed
        .iter()
        .copied()
        .filter(|&id| id != task_vocabulary.eos)
        .collect();
    // No <eos> among the allowed ids: every row generates exactly new_tokens.
    let v = Vocabulary {
        eos: u32::MAX,
        allowed: allowed.clone(),
        content_groups: Vec::new(),
        ..task_vocabulary.clone()
    };
    let seeds: Vec<u64> = (0..cfg.batch as u64).collect();
    let plain = SamplingConfig {
        max_new_tokens: cfg.new_tokens,
        ..SamplingConfig::default()
    };
    let guided = SamplingConfig {
        cfg_gamma: Some(cfg.cfg_gamma),
        ..plain.clone()
    };
    let tokens = (cfg.batch * cfg.new_tokens) as f64;
    let (mut t_plain, mut t_cfg) = (Vec::new(), Vec::new());
    sample(model, &prompts, &seeds, &v, &plain)?; // warm-up
    let mut drawn = (Vec::new(), Vec::new());
    for _ in 0..cfg.reps {
        let start = Instant::now();
        drawn.0 = sample(model, &prompts, &seeds, &v, &plain)?.tokens;
        t_plain.push(tokens / start.elapsed().as_secs_f64());
        let start = Instant::now();
        drawn.1 = sample(model, &prompts, &seeds, &v, &guided)?.tokens;
        t_cfg.push(tokens / start.elapsed().as_secs_f64());
    }
    let (qd_plain, qd_cfg) = (median(t_plain), median(t_cfg));
    let threads = tch::get_num_threads();
    let mut report = BenchReport {
        batch: cfg.batch,
        new_tokens: cfg.new_tokens,
        reps: cfg.reps,
        threads,
        qd_plain,
        qd_cfg,
        cfg_over_plain: qd_cfg / qd_plain,
        torch_plain: None,
        torch_cfg: None,
        qd_over_torch_plain: None,
        qd_over_torch_cfg: None,
        max_logprob_diff: None,
        max_logprob_diff_cfg: None,
    };
    let Some(python) = &cfg.python else {
        return Ok(report);
    };
    let request = std::env::temp_dir().join(format!("qd-bench-{}.json", std::process::id()));
    let body = serde_json::json!({
        "prompts": prompts, "sep": v.sep, "pad": v.pad, "allowed": allowed,
        "follow": {"plain": drawn.0, "cfg": drawn.1},
    });
    std::fs::write(&request, serde_json::to_vec(&body)?)?;
    let out = Command::new(python)
        .arg(&cfg.script)
        .arg("--checkpoint")
        .arg(checkpoint)
        .arg("--request")
        .arg(&request)
        .args([
            "--new-tokens",
            &cfg.new_tokens.to_string(),
            "--reps",
            &cfg.reps.to_string(),
        ])
        .args([
            "--cfg",
            &cfg.cfg_gamma.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .output()
        .with_context(|| format!("running {} {}", python.display(), cfg.script.display()))?;
    let _ = std::fs::remove_file(&request);
    if !out.status.success() {
        bail!(
            "the PyTorch reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading the reference's output")?;
    let rate = |mode: &str| -> Option<f64> {
        let secs: Vec<f64> = r["seconds"][mode]
            .as_array()?
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .collect();
        Some(median(secs.iter().map(|s| tokens / s).collect()))
    };
    report.torch_plain = rate("plain");
    report.torch_cfg = rate("cfg");
    report.qd_over_torch_plain = report.torch_plain.map(|t| qd_plain / t);
    report.qd_over_torch_cfg = report.torch_cfg.map(|t| qd_cfg / t);
    let ours = |s: &SamplingConfig, tokens| guided_logprobs(model, &prompts, tokens, &v, s);
    report.max_logprob_diff = max_diff(&ours(&plain, &drawn.0)?, &r["logprobs"]["plain"]);
    report.max_logprob_diff_cfg = max_diff(&ours(&guided, &drawn.1)?, &r["logprobs"]["cfg"]);
    Ok(report)
}

/// The largest |a − b| over every row, step and id of qd's log-probabilities and the
/// reference's (`None` when the reference's do not have the same shape).
fn max_diff(ours: &[Vec<Vec<f32>>], theirs: &serde_json::Value) -> Option<f64> {
    let theirs = theirs.as_array()?;
    if theirs.len() != ours.len() {
        return None;
    }
    let mut max = 0f64;
    for (a, b) in ours.iter().zip(theirs) {
        let b = b.as_array()?;
        if a.len() != b.len() {
            return None;
        }
        for (a, b) in a.iter().zip(b) {
            let b = b.as_array()?;
            if a.len() != b.len() {
                return None;
            }
            for (x, y) in a.iter().zip(b) {
                max = max.max((f64::from(*x) - y.as_f64()?).abs());
            }
        }
    }
    Some(max)
}

impl BenchReport {
    pub fn table(&self) -> String {
        let opt =
            |x: Option<f64>, prec: usize| x.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        format!(
            "batch {} × {} new tokens, {} repetitions (medians), {} threads\n\
             {:<10} {:>12} {:>12} {:>9}\n\
             {:<10} {:>12.0} {:>12} {:>9}\n\
             {:<10} {:>12.0} {:>12} {:>9}\n\
             CFG / plain throughput (qd): {:.3}\n\
             max |Δ log p| qd vs PyTorch, every id, step and row: plain {}, CFG {}\n",
            self.batch,
            self.new_tokens,
            self.reps,
            self.threads,
            "tokens/s",
            "qd",
            "PyTorch",
            "qd/PT",
            "plain",
            self.qd_plain,
            opt(self.torch_plain, 0),
            opt(self.qd_over_torch_plain, 2),
            "cfg",
            self.qd_cfg,
            opt(self.torch_cfg, 0),
            opt(self.qd_over_torch_cfg, 2),
            self.cfg_over_plain,
            self.max_logprob_diff
                .map_or("-".to_string(), |d| format!("{d:.1e}")),
            self.max_logprob_diff_cfg
                .map_or("-".to_string(), |d| format!("{d:.1e}")),
        )
    }
}
