//! The experiments' flags: `qd sweep` (the paper's comparison) and `qd curve`.

use std::path::PathBuf;

use clap::Args;
use model::task::Split;

use super::{held_out_split, ComputeArgs};

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Run folders of the β sweep (each with `student.safetensors`; β is read from the
    /// student's metadata or the folder's `run-config.toml`; one must have β = 0).
    #[arg(long, required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// The base model: the CFG and temperature baselines, and one end of `lerp-base`.
    #[arg(long, default_value = "runs/pretrain/last.safetensors")]
    pub base: PathBuf,
    #[arg(long, default_value = "runs/embedder.safetensors")]
    pub embedder: PathBuf,
    #[arg(long, default_value = "runs/judge.safetensors")]
    pub judge: PathBuf,
    /// The prepared dataset.
    #[arg(long, default_value = "data/folk")]
    pub data: PathBuf,
    /// The held-out split the prompts come from: val while choosing settings, test for
    /// the final word.
    #[arg(long, default_value = "test", value_parser = held_out_split)]
    pub split: Split,
    /// Held-out prompts: N of the split, drawn in proportion to its collections.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..))]
    pub prompts: u32,
    /// Samples per prompt.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=64))]
    pub samples: u32,
    /// CFG strengths γ of the base model (1: no guidance).
    #[arg(long = "cfg", value_delimiter = ',', default_value = "1,1.5,2,3,4,5,7")]
    pub gammas: Vec<f64>,
    /// Temperatures of the base model and of the β = 0 student.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.5,0.6,0.7,0.85,1,1.15,1.3"
    )]
    pub temperatures: Vec<f64>,
    /// Thresholds α of the plausibility constraint alone on the base model (ids below
    /// α times the most likely one's probability are not sampled); `none` for no points.
    #[arg(long = "plausibility", value_delimiter = ',', default_value = "0.02,0.05,0.1,0.2", value_parser = plausibility_or_none)]
    pub plausibilities: Vec<Option<f64>>,
    /// LERP weights λ (default: 0 to 1 in steps of 0.1, or 0.05 with --fine).
    #[arg(long, value_delimiter = ',', conflicts_with = "fine")]
    pub lambdas: Option<Vec<f64>>,
    /// λ in steps of 0.05.
    #[arg(long)]
    pub fine: bool,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Rows per sampling batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder: sweep.csv, summary.{json,md}, front/lerp/training .png and .svg,
    /// and the per-point cache in points/.
    #[arg(long, default_value = "runs/sweep")]
    pub out: PathBuf,
    /// No progress bar (log lines only).
    #[arg(long)]
    pub no_progress: bool,
    /// Print the summary (summary.json's content, and the files written) as one JSON
    /// object instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

#[derive(Debug, Args)]
pub struct CurveArgs {
    /// Run folders, each holding `eval-<step>.json` reports.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Output stem: STEM.png, STEM.svg and STEM.csv.
    #[arg(long, default_value = "runs/curve/curve")]
    pub out: PathBuf,
    /// The figure's title.
    #[arg(long, default_value = "held-out quality against pre-training steps")]
    pub title: String,
}

/// A plausibility threshold, or `none` (no plausibility points).
fn plausibility_or_none(s: &str) -> Result<Option<f64>, String> {
    if s == "none" {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(a) if a > 0.0 && a < 1.0 => Ok(Some(a)),
        _ => Err(format!("{s} is not a threshold in (0, 1) or `none`")),
    }
}
