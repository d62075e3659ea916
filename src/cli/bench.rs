//! `qd bench`'s flags: each benchmark against its reference.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::*;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Generation tokens/s with and without CFG, and against a PyTorch-eager reference.
    Generate(BenchGenerateArgs),
    /// Trajectories/s, learner step time and the learner's idle share with 1, 2 and 4
    /// actors; weight delivery to 2 and to 8 subscribers against a raw loopback copy of
    /// the same bytes.
    Service(BenchServiceArgs),
    /// The learner's step (teacher passes with CFG, student forward and backward, AdamW)
    /// on a fixed batch against a PyTorch-eager reference of the same step: time, and
    /// agreement of the loss, the gradient and the updated weights.
    ///
    /// The loss and optimizer settings are the learner's (`--config`, `--set
    /// learner.beta=2`, …); the base model (`paths.base`) is the teacher and the
    /// student's start; the batch is `learner.batch_prompts` training prompts × 2 samples
    /// drawn from it.
    Learner(BenchLearnerArgs),
    /// One pre-training step (cross-entropy forward and backward, clipping, AdamW) on
    /// `qd pretrain`'s first batch against a PyTorch-eager reference of the same step on
    /// the same weights: time, share of the machine's matrix-product rate, and agreement
    /// of the loss and the gradient. Dropout off in both (the reference has none).
    Pretrain(BenchPretrainArgs),
    /// How the cost grows: the learner's step against prompts per batch, sample length
    /// and model preset, and generation tokens/s against the batch (fresh weights,
    /// `<eos>` disallowed); `scaling.csv` and `scaling.png`/`.svg` in --out.
    Scaling(BenchScalingArgs),
    /// The fault campaign against a learner and two actors on loopback (minutes): idle
    /// and silent streams (memory, Status latency), the heaviest messages the limits let
    /// through (peak memory), generated malformed messages, actor
    /// and learner SIGKILLs (resume, version identity, reconnect times, the training
    /// log). The base model, dataset and embedder come from the config's paths.
    Faults(BenchFaultsArgs),
}

#[derive(Debug, Args)]
pub struct BenchFaultsArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// `WatchWeights` streams opened and never read.
    #[arg(long, default_value_t = 2000)]
    pub idle_watchers: usize,
    /// `PushTrajectories` streams opened and never written.
    #[arg(long, default_value_t = 500)]
    pub idle_pushes: usize,
    /// Trajectory streams sending the heaviest messages the limits let through, at once.
    #[arg(long, default_value_t = 128)]
    pub heavy_streams: usize,
    /// 63 MiB messages sent at once after them.
    #[arg(long, default_value_t = 4)]
    pub oversize_messages: usize,
    /// Malformed messages sent, each on its own stream.
    #[arg(long, default_value_t = 1000)]
    pub malformed: usize,
    /// Actor SIGKILLs (each actor restarted at once).
    #[arg(long, default_value_t = 10)]
    pub actor_kills: usize,
    /// Learner SIGKILLs (each learner restarted on the same port).
    #[arg(long, default_value_t = 20)]
    pub learner_kills: usize,
    /// Seeds the moments of the kills and the generated messages.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchLearnerArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Most tokens sampled per sample of the batch (default: the config's
    /// `actor.max_new_tokens`, what the learner trains on).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub new_tokens: Option<u32>,
    /// Timed steps, after the compared ones (median reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub reps: u32,
    /// Steps compared with the reference on the batch first: the first step's loss and
    /// gradient, the weights and AdamW's moments after the last.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub compare_steps: u32,
    #[command(flatten)]
    pub reference: ReferenceArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// libtorch intra-op threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct BenchPretrainArgs {
    /// Weights to start from (default: a freshly initialised --preset model; speed does
    /// not depend on the weights).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Model size when no checkpoint is given.
    #[arg(long, default_value = "small")]
    pub preset: Preset,
    /// The prepared dataset.
    #[arg(long, default_value = "data/folk")]
    pub data: PathBuf,
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch_size: u32,
    /// Tokens per training row, as `qd pretrain --context` (fresh models only).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(8..))]
    pub context: u32,
    /// Timed steps, after the compared first one (median reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub reps: u32,
    #[command(flatten)]
    pub reference: ReferenceArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

#[derive(Debug, Args)]
pub struct BenchScalingArgs {
    /// The learner's loss and optimizer settings, and `paths.data`.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Prompts per learner batch (at --length tokens, small preset).
    #[arg(long, value_delimiter = ',', default_value = "4,8,16,32,64")]
    pub prompts: Vec<usize>,
    /// Tokens per sample (at 8 prompts, small preset).
    #[arg(long, value_delimiter = ',', default_value = "64,128,256,512")]
    pub lengths: Vec<usize>,
    /// Model presets (at 8 prompts × --length tokens).
    #[arg(long, value_delimiter = ',', default_value = "tiny,small,base")]
    pub presets: Vec<Preset>,
    /// Generation batch sizes (128 tokens a row, small preset).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    pub batches: Vec<usize>,
    /// Tokens per sample of the prompts and presets series.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub length: u32,
    /// Timed repetitions per point (median reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub reps: u32,
    /// Folder for scaling.csv and the figure.
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
    /// Print the points as one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// libtorch intra-op threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct BenchServiceArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Learner steps per run.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=100_000))]
    pub steps: u64,
    /// Actor counts to run, e.g. 1,2,4.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub actors: Vec<usize>,
    /// Weight subscriber counts of the delivery measurement, e.g. 2,8.
    #[arg(long, value_delimiter = ',', default_value = "2,8")]
    pub subscribers: Vec<usize>,
    /// Versions delivered, each followed by a raw copy of the same bytes (medians
    /// reported; a version takes milliseconds, and the medians of fewer move by 0.1).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub reps: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchGenerateArgs {
    /// Policy checkpoint (default: a freshly initialised --preset model; speed does not
    /// depend on the weights).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Model size when no checkpoint is given.
    #[arg(long, default_value = "small")]
    pub preset: Preset,
    /// The prepared dataset (vocabulary and prompts).
    #[arg(long, default_value = "data/folk")]
    pub data: PathBuf,
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: u32,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub new_tokens: u32,
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub reps: u32,
    /// CFG strength γ of the guided runs.
    #[arg(long = "cfg", default_value_t = 3.0)]
    pub cfg_gamma: f64,
    #[command(flatten)]
    pub reference: ReferenceArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// The PyTorch reference a benchmark compares qd with.
#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// Python with torch for the reference (default: the project venv's).
    #[arg(long, default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// Skip the PyTorch reference.
    #[arg(long)]
    pub no_reference: bool,
}

impl ReferenceArgs {
    /// The Python to run the reference with, or `None` to skip it.
    pub fn python(self) -> Option<PathBuf> {
        (!self.no_reference).then_some(self.python)
    }
}
