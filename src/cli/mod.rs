//! The command line: every clap definition. The `///` comments are the `--help` texts.
//!
//! The commands and the shared flag groups (`SamplingArgs`, `ComputeArgs`,
//! `ServiceArgs`) are here; the benchmarks' flags in [`bench`], the experiments' (`qd
//! sweep`, `qd curve`) in [`experiments`].

mod bench;
mod experiments;
mod service;

pub use bench::*;
pub use experiments::*;
pub use service::*;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use folk::dataset::Split;
use model::config::Preset;
use model::sampling::{CfgScope, SamplingConfig};
use tch::Device;

/// Diversity-rewarded CFG distillation as a distributed actor/learner service.
#[derive(Debug, Parser)]
#[command(name = "qd", version, about, long_about = None)]
pub struct Cli {
    /// Log format (default: text; the service roles read `log.format` from their config).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl From<LogFormat> for common::settings::LogFormat {
    fn from(f: LogFormat) -> common::settings::LogFormat {
        match f {
            LogFormat::Text => common::settings::LogFormat::Text,
            LogFormat::Json => common::settings::LogFormat::Json,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The folk-tune dataset.
    #[command(subcommand)]
    Data(DataCommand),
    /// Pre-train the policy with maximum likelihood and condition dropout.
    Pretrain(PretrainArgs),
    /// The diversity embedder.
    #[command(subcommand)]
    Embedder(EmbedderCommand),
    /// The quality judge (evaluation only).
    #[command(subcommand)]
    Judge(JudgeCommand),
    /// Generate tunes for a text prompt, written as .abc and .mid files.
    Sample(SampleArgs),
    /// Quality and diversity of a checkpoint on the held-out test prompts.
    Eval(EvalArgs),
    /// Side by side: two operating points (a checkpoint and how it is sampled) draw for
    /// the same held-out prompts with the same seeds; per prompt, which side the judge
    /// prefers and which side's samples are more diverse, as win rates with 95% intervals.
    ///
    /// A and B are `PATH[@key=value,…]`, keys cfg (γ), scope (all, content),
    /// plausibility, temperature, top_k; e.g. `qd compare runs/merged/m.safetensors
    /// runs/pretrain/last.safetensors@cfg=3`.
    Compare(CompareArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Serve the learner: trajectories in, distilled and diversified weights out.
    Learner(ServiceArgs),
    /// Run an actor: rollouts of the current student, with diversity rewards, to the learner.
    Actor(ServiceArgs),
    /// Run the evaluator: scores new student versions on held-out prompts, as metrics.
    Evaluator(ServiceArgs),
    /// Run the learner, the actors and the evaluator as local processes (the embedded
    /// default): stops them all on Ctrl-C or when the learner reaches its step budget.
    Run(ServiceArgs),
    /// Print the effective configuration (defaults ← --config ← QD__… ← --set) as JSON,
    /// or the error naming the key that is wrong; `--reference`: every key's type, unit,
    /// default and meaning as markdown (docs/configuration.md).
    Config(ConfigArgs),
    /// Merge policy checkpoints: LERP of two (`--lambda`) or the uniform average of all
    /// (`--average`). The output is an ordinary checkpoint.
    Merge(MergeArgs),
    /// Write a policy for PyTorch users: `model.safetensors` (the weights alone, PyTorch
    /// names), `config.json`, `vocab.json` (the text of every id), `qd_model.py` (the
    /// architecture in plain PyTorch, with a loader; needs torch only) and
    /// `folk_metrical.py` (the metrical position the policy embeds beside each token).
    Export(ModelExportArgs),
    /// Compare CFG, temperature, the β-sweep students and weight interpolation on the same
    /// held-out prompts and seeds: a CSV, plots, hypervolumes (each point cached).
    ///
    /// Families: the base model with CFG γ, with temperatures and with the plausibility
    /// constraint alone, the β = 0 students with temperatures and at their earlier
    /// checkpoints (distilling less), every run's student, LERP from each β = 0 student to
    /// the most diverse β's student and to the base model, and the average of all students.
    /// The summary tells whether the diversity reward beats each baseline at matched
    /// diversity, with intervals over runs and prompts.
    Sweep(SweepArgs),
    /// Learning curves: held-out quality and bar validity of checkpoints against their
    /// step, from `qd eval --json` reports saved as `<run folder>/eval-<step>.json`, one
    /// line per folder (`make curve`).
    Curve(CurveArgs),
    /// Probe a qd process: gRPC health (`host:port`, the learner; `grpcs://host:port`
    /// over TLS) or an HTTP endpoint (`http://host:port/metrics`, every process); exit 0
    /// when it is healthy.
    Health(HealthArgs),
    /// Certificates for TLS between the learner and its clients.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Print the libtorch build qd runs on.
    Info {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell's completion script for qd (`make install` installs bash's and
    /// zsh's), e.g. `qd completions bash > ~/.local/share/bash-completion/completions/qd`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write qd's manual pages (qd.1 and one per command, qd-run.1 …) into a folder.
    Man {
        /// The folder (created if missing), e.g. ~/.local/share/man/man1.
        #[arg(long)]
        out: PathBuf,
    },
}

impl Command {
    /// The learner, actor, evaluator and `run`: long-running processes that set up their
    /// logging from their settings.
    pub fn is_service_role(&self) -> bool {
        matches!(
            self,
            Command::Learner(_) | Command::Actor(_) | Command::Evaluator(_) | Command::Run(_)
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Parse the raw ABC corpus and write the tokenized, captioned, split dataset.
    Prepare(PrepareArgs),
    /// Write tunes of the prepared dataset as .abc and .mid files, rendered from tokens.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Folder with one sub-folder of .abc files per collection (`make setup` fills it).
    #[arg(long, default_value = "data/raw")]
    pub raw: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "data/folk")]
    pub out: PathBuf,
    /// Seed of the split and the captions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Leave out tunes with more tokens than this.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..))]
    pub max_tokens: u32,
    /// Print the summary as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The prepared dataset.
    #[arg(long, default_value = "data/folk")]
    pub data: PathBuf,
    /// Which split to take tunes from.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    pub split: SplitArg,
    /// How many tunes.
    #[arg(short, long, default_value_t = 4)]
    pub n: usize,
    /// Tempo of the MIDI files, quarter notes per minute.
    #[arg(long, default_value_t = 120)]
    pub qpm: u32,
    /// Output folder.
    #[arg(long, default_value = "samples/corpus")]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SplitArg {
    Train,
    Val,
    Test,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Split {
        match s {
            SplitArg::Train => Split::Train,
            SplitArg::Val => Split::Val,
            SplitArg::Test => Split::Test,
        }
    }
}

#[derive(Debug, Args)]
pub struct PretrainArgs {
    /// The prepared dataset.
    #[arg(long, default_value = "data/folk")]
    pub data: PathBuf,
    /// Run folder: `last.safetensors` is written there, and the run resumes from it.
    #[arg(long, default_value = "runs/pretrain")]
    pub out: PathBuf,
    /// Model size: tiny, small or base.
    #[arg(long, default_value = "small")]
    pub preset: Preset,
    /// Train without the metrical position (where each token falls in its bar, embedded
    /// beside the token): the comparison `docs/results.md` reports.
    #[arg(long)]
    pub no_metrical: bool,
    /// Train on explicit position tokens in the sequence instead (REMI: the onset of every
    /// note as a token before it; no metrical embedding): the alternative `make curve`
    /// measures. Evaluate such a policy with `qd eval --remi`.
    #[arg(long)]
    pub remi: bool,
    /// Total training steps (the learning-rate schedule spans them).
    #[arg(long, default_value_t = 2000)]
    pub steps: u64,
    /// Stop after this step for now; the same command without it continues the run.
    #[arg(long)]
    pub until: Option<u64>,
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// Training sequences are cut to this many tokens, and the model gets this many
    /// positions (at most the preset's: tiny 320, small 512, base 1100), so that sampling
    /// never reaches a position pre-training did not train.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(8..))]
    pub context: u32,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Linear warm-up steps before the cosine decay.
    #[arg(long, default_value_t = 80)]
    pub warmup: u64,
    /// Gradient clipping (global L2 norm).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Probability of training a tune with the empty prompt (what makes CFG possible).
    #[arg(long, default_value_t = 0.15)]
    pub cond_dropout: f64,
    /// Steps between validation losses.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub eval_every: u64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// No progress bar (log lines only).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum EmbedderCommand {
    /// Train the embedder contrastively (InfoNCE on two crops of the same tune).
    Train(EncoderTrainArgs),
}

#[derive(Debug, Subcommand)]
pub enum JudgeCommand {
    /// Train the attribute classifier behind the quality score.
    Train(EncoderTrainArgs),
}

/// Training settings shared by the embedder and the judge.
#[derive(Debug, Args)]
pub struct EncoderTrainArgs {
    /// The prepared dataset.
    #[arg(long, default_value = "data/folk")]
    pub data: PathBuf,
    /// The checkpoint to write (default: runs/embedder.safetensors or runs/judge.safetensors).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..))]
    pub batch_size: u32,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl EncoderTrainArgs {
    pub fn out(&self, default: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from(default))
    }
}

#[derive(Debug, Args)]
pub struct ComputeArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = model::device::parse_device)]
    pub device: Device,
    /// libtorch intra-op threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl ComputeArgs {
    /// Applies the thread count and checks the device exists.
    pub fn apply(&self) -> Result<Device> {
        Ok(model::device::use_device(
            self.device,
            self.threads.unwrap_or(0),
        )?)
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number in (0, 1]")),
    }
}

/// The sampling flags `sample` and `eval` share (each keeps its own `--max-new-tokens`,
/// which comes at a different place in their `--help`).
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Classifier-free guidance strength γ (1: none; omit for plain sampling).
    #[arg(long = "cfg")]
    pub cfg_gamma: Option<f64>,
    /// Draw only ids whose conditional probability is at least this share of the most
    /// likely id's (e.g. 0.1; omit to allow every id): before guidance with --cfg, alone a
    /// truncation of plain sampling.
    #[arg(long, value_parser = parse_share)]
    pub cfg_plausibility: Option<f64>,
    /// With --cfg: what guidance re-weighs: `all` ids (standard CFG) or only the `content`
    /// (which pitch, key, meter; the rhythm and bar lines stay conditional).
    #[arg(long, requires = "cfg_gamma", default_value_t = CfgScope::All)]
    pub cfg_scope: CfgScope,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
}

impl SamplingArgs {
    /// The sampling configuration, with a checked temperature.
    pub fn config(&self, max_new_tokens: usize) -> Result<SamplingConfig> {
        anyhow::ensure!(
            self.temperature > 0.0 && self.temperature.is_finite(),
            "--temperature must be positive"
        );
        Ok(SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            cfg_gamma: self.cfg_gamma,
            cfg_plausibility: self.cfg_plausibility,
            cfg_scope: self.cfg_scope,
            max_new_tokens,
        })
    }
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// The prompt, e.g. "a lively irish reel in d major".
    pub prompt: String,
    /// Policy checkpoint.
    #[arg(long, default_value = "runs/pretrain/last.safetensors")]
    pub checkpoint: PathBuf,
    /// The prepared dataset (for the vocabulary).
    #[arg(long, default_value = "data/folk")]
    pub data: PathBuf,
    /// How many tunes.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub n: u32,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Tempo of the MIDI files, quarter notes per minute.
    #[arg(long, default_value_t = 120)]
    pub qpm: u32,
    /// Output folder.
    #[arg(long, default_value = "samples/prompt")]
    pub out: PathBuf,
    /// Print one JSON object (the files written, each tune's text) instead of the tunes.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

// `eval` has always described --cfg in fewer words than `sample`: keep its help text.
/// What `qd eval` and `qd compare` share: the scorers, the token budget, batching, seed
/// and output.
#[derive(Debug, Args)]
pub struct ScoringArgs {
    /// The held-out split the prompts come from: val while choosing settings, test for
    /// the final word.
    #[arg(long, default_value = "test", value_parser = held_out_split)]
    pub split: Split,
    #[arg(long, default_value = "runs/embedder.safetensors")]
    pub embedder: PathBuf,
    #[arg(long, default_value = "runs/judge.safetensors")]
    pub judge: PathBuf,
    /// The prepared dataset.
    #[arg(long, default_value = "data/folk")]
    pub data: PathBuf,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Rows per sampling batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

#[derive(Debug, Args)]
#[command(mut_arg("cfg_gamma", |a| a.help("Classifier-free guidance strength γ (omit for none)")))]
pub struct EvalArgs {
    /// Policy checkpoint.
    #[arg(long, default_value = "runs/pretrain/last.safetensors")]
    pub checkpoint: PathBuf,
    /// Samples per prompt.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=64))]
    pub k: u32,
    /// Use N prompts of the split, drawn in proportion to its collections, the same N for
    /// every call (default: all).
    #[arg(long)]
    pub prompts: Option<usize>,
    /// The policy was pre-trained with `qd pretrain --remi` (position tokens in its
    /// samples, dropped before they are judged).
    #[arg(long)]
    pub remi: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub scoring: ScoringArgs,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Side A: `PATH[@cfg=γ,scope=all|content,plausibility=p,temperature=T,top_k=k]`.
    pub a: eval::compare::Side,
    /// Side B, the same form.
    pub b: eval::compare::Side,
    /// Held-out prompts: N of the split, drawn in proportion to its collections.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(2..))]
    pub prompts: u32,
    /// Samples per prompt on each side (a pair, as the reward and the raters saw them).
    #[arg(short, long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=64))]
    pub k: u32,
    #[command(flatten)]
    pub scoring: ScoringArgs,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Policy checkpoints of the same architecture and vocabulary.
    #[arg(required = true, num_args = 2..)]
    pub checkpoints: Vec<PathBuf>,
    /// θ = (1−λ)·θ_first + λ·θ_second (two checkpoints).
    #[arg(long, conflicts_with = "average")]
    pub lambda: Option<f64>,
    /// The uniform average of every checkpoint given.
    #[arg(long)]
    pub average: bool,
    /// The checkpoint to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object (what was merged, how, and where it went).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ModelExportArgs {
    /// A policy checkpoint (pre-training, a student, a merge).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The prepared dataset the checkpoint was trained on (its vocabulary).
    #[arg(long, default_value = "data/folk")]
    pub data: PathBuf,
    /// The folder to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// A held-out split (`val` or `test`): evaluation never runs on the training prompts.
pub(crate) fn held_out_split(s: &str) -> Result<Split, String> {
    match s.parse()? {
        Split::Train => Err("evaluation takes a held-out split: val or test".into()),
        split => Ok(split),
    }
}
