//! `qd`: one binary for every role and tool. This file parses arguments and wires the
//! library crates together; the work lives in `common`, `actor` and `learner`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use common::settings::Settings;
use common::telemetry::init_logging;
use eval::bench::{bench_generate, BenchConfig};
use eval::evaluate::{evaluate, EvalConfig};
use eval::sweep;
use folk::dataset::{prepare, Dataset, PrepareConfig, Split};
use folk::embedder::{train_embedder, EmbedderConfig};
use folk::judge::{train_judge, JudgeConfig};
use folk::pretrain::{pretrain, PretrainConfig};
use folk::{midi, render, FolkTask};
use model::checkpoint::{load_policy, save, ModelKind, Stamp};
use model::config::Preset;
use model::fsutil::write_atomic;
use model::sampling::{sample, CfgScope, SamplingConfig};
use model::task::Task;
use tch::Device;

mod bench_service;
mod health;
mod run;

/// Diversity-rewarded CFG distillation as a distributed actor/learner service.
#[derive(Debug, Parser)]
#[command(name = "qd", version, about, long_about = None)]
struct Cli {
    /// Log format (default: text; the service roles read `log.format` from their config).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// or the error naming the key that is wrong.
    Config(ServiceArgs),
    /// Merge policy checkpoints: LERP of two (`--lambda`) or the uniform average of all
    /// (`--average`). The output is an ordinary checkpoint.
    Merge(MergeArgs),
    /// Compare CFG, temperature, the β-sweep students and weight interpolation on the same
    /// held-out prompts and seeds: a CSV, plots, hypervolumes (each point cached).
    ///
    /// Families: the base model with CFG γ and with temperatures, the β = 0 student with
    /// temperatures, every run's student, LERP from the β = 0 student to the most diverse
    /// student and to the base model, and the average of all students.
    Sweep(SweepArgs),
    /// Probe a qd process: gRPC health (`host:port`, the learner) or an HTTP endpoint
    /// (`http://host:port/metrics`, every process); exit 0 when it is healthy.
    Health(HealthArgs),
    /// Print the libtorch build qd runs on.
    Info {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct HealthArgs {
    /// `host:port` or `grpc://host:port` (grpc.health.v1), or `http://host:port/path`
    /// (must answer 200).
    target: health::Target,
    /// gRPC service to ask about ("" is the whole server).
    #[arg(long, default_value = "")]
    service: String,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Parse the raw ABC corpus and write the tokenized, captioned, split dataset.
    Prepare(PrepareArgs),
    /// Write tunes of the prepared dataset as .abc and .mid files, rendered from tokens.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct PrepareArgs {
    /// Folder with one sub-folder of .abc files per collection (`make setup` fills it).
    #[arg(long, default_value = "data/raw")]
    raw: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "data/folk")]
    out: PathBuf,
    /// Seed of the split and the captions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Leave out tunes with more tokens than this.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..))]
    max_tokens: u32,
    /// Print the summary as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The prepared dataset.
    #[arg(long, default_value = "data/folk")]
    data: PathBuf,
    /// Which split to take tunes from.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// How many tunes.
    #[arg(short, long, default_value_t = 4)]
    n: usize,
    /// Tempo of the MIDI files, quarter notes per minute.
    #[arg(long, default_value_t = 120)]
    qpm: u32,
    /// Output folder.
    #[arg(long, default_value = "samples/corpus")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct PretrainArgs {
    /// The prepared dataset.
    #[arg(long, default_value = "data/folk")]
    data: PathBuf,
    /// Run folder: `last.safetensors` is written there, and the run resumes from it.
    #[arg(long, default_value = "runs/pretrain")]
    out: PathBuf,
    /// Model size: tiny, small or base.
    #[arg(long, default_value = "small")]
    preset: Preset,
    /// Total training steps (the learning-rate schedule spans them).
    #[arg(long, default_value_t = 1600)]
    steps: u64,
    /// Stop after this step for now; the same command without it continues the run.
    #[arg(long)]
    until: Option<u64>,
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    /// Training sequences are cut to this many tokens.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(8..))]
    context: u32,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Linear warm-up steps before the cosine decay.
    #[arg(long, default_value_t = 80)]
    warmup: u64,
    /// Gradient clipping (global L2 norm).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Probability of training a tune with the empty prompt (what makes CFG possible).
    #[arg(long, default_value_t = 0.15)]
    cond_dropout: f64,
    /// Steps between validation losses.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    eval_every: u64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    compute: ComputeArgs,
    /// No progress bar (log lines only).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Subcommand)]
enum EmbedderCommand {
    /// Train the embedder contrastively (InfoNCE on two crops of the same tune).
    Train(EncoderTrainArgs),
}

#[derive(Debug, Subcommand)]
enum JudgeCommand {
    /// Train the attribute classifier behind the quality score.
    Train(EncoderTrainArgs),
}

/// Training settings shared by the embedder and the judge.
#[derive(Debug, Args)]
struct EncoderTrainArgs {
    /// The prepared dataset.
    #[arg(long, default_value = "data/folk")]
    data: PathBuf,
    /// The checkpoint to write (default: runs/embedder.safetensors or runs/judge.safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..))]
    batch_size: u32,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    compute: ComputeArgs,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

impl EncoderTrainArgs {
    fn out(&self, default: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from(default))
    }
}

/// Creates the folder a file goes in.
fn create_parent(path: &std::path::Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        None => Ok(()),
    }
}

#[derive(Debug, Args)]
struct ComputeArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = model::device::parse_device)]
    device: Device,
    /// libtorch intra-op threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number in (0, 1]")),
    }
}

impl ComputeArgs {
    /// Applies the thread count and checks the device exists.
    fn apply(&self) -> Result<Device> {
        model::device::use_device(self.device, self.threads.unwrap_or(0))
    }
}

#[derive(Debug, Args)]
struct SampleArgs {
    /// The prompt, e.g. "a lively irish reel in d major".
    prompt: String,
    /// Policy checkpoint.
    #[arg(long, default_value = "runs/pretrain/last.safetensors")]
    checkpoint: PathBuf,
    /// The prepared dataset (for the vocabulary).
    #[arg(long, default_value = "data/folk")]
    data: PathBuf,
    /// How many tunes.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    n: u32,
    /// Classifier-free guidance strength γ (1: none; omit for plain sampling).
    #[arg(long = "cfg")]
    cfg_gamma: Option<f64>,
    /// With --cfg: draw only ids whose conditional probability is at least this share of
    /// the most likely id's (e.g. 0.1; omit to allow every id).
    #[arg(long, requires = "cfg_gamma", value_parser = parse_share)]
    cfg_plausibility: Option<f64>,
    /// With --cfg: what guidance re-weighs: `all` ids (standard CFG) or only the `content`
    /// (which pitch, key, meter; the rhythm and bar lines stay conditional).
    #[arg(long, requires = "cfg_gamma", default_value_t = CfgScope::All)]
    cfg_scope: CfgScope,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Tempo of the MIDI files, quarter notes per minute.
    #[arg(long, default_value_t = 120)]
    qpm: u32,
    /// Output folder.
    #[arg(long, default_value = "samples/prompt")]
    out: PathBuf,
    #[command(flatten)]
    compute: ComputeArgs,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Policy checkpoint.
    #[arg(long, default_value = "runs/pretrain/last.safetensors")]
    checkpoint: PathBuf,
    #[arg(long, default_value = "runs/embedder.safetensors")]
    embedder: PathBuf,
    #[arg(long, default_value = "runs/judge.safetensors")]
    judge: PathBuf,
    /// The prepared dataset.
    #[arg(long, default_value = "data/folk")]
    data: PathBuf,
    /// Samples per prompt.
    #[arg(short, long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=64))]
    k: u32,
    /// Use only the first N test prompts (default: all).
    #[arg(long)]
    prompts: Option<usize>,
    /// Classifier-free guidance strength γ (omit for none).
    #[arg(long = "cfg")]
    cfg_gamma: Option<f64>,
    /// With --cfg: draw only ids whose conditional probability is at least this share of
    /// the most likely id's (e.g. 0.1; omit to allow every id).
    #[arg(long, requires = "cfg_gamma", value_parser = parse_share)]
    cfg_plausibility: Option<f64>,
    /// With --cfg: what guidance re-weighs: `all` ids (standard CFG) or only the `content`
    /// (which pitch, key, meter; the rhythm and bar lines stay conditional).
    #[arg(long, requires = "cfg_gamma", default_value_t = CfgScope::All)]
    cfg_scope: CfgScope,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Rows per sampling batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    compute: ComputeArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Generation tokens/s with and without CFG, and against a PyTorch-eager reference.
    Generate(BenchGenerateArgs),
    /// Trajectories/s and learner step time with 1 and 2 actors; weight delivery to every
    /// actor against a raw loopback copy of the same bytes.
    Service(BenchServiceArgs),
}

#[derive(Debug, Args)]
struct BenchServiceArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// Learner steps per run.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=100_000))]
    steps: u64,
    /// Actor counts to run, e.g. 1,2.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    actors: Vec<usize>,
    /// Weight subscribers in the delivery measurement.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    subscribers: u32,
    /// Versions delivered (median reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reps: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct BenchGenerateArgs {
    /// Policy checkpoint (default: a freshly initialised --preset model; speed does not
    /// depend on the weights).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Model size when no checkpoint is given.
    #[arg(long, default_value = "small")]
    preset: Preset,
    /// The prepared dataset (vocabulary and prompts).
    #[arg(long, default_value = "data/folk")]
    data: PathBuf,
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    batch: u32,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    new_tokens: u32,
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,
    /// CFG strength γ of the guided runs.
    #[arg(long = "cfg", default_value_t = 3.0)]
    cfg_gamma: f64,
    /// Python with torch for the reference (default: the project venv's).
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Skip the PyTorch reference.
    #[arg(long)]
    no_reference: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    compute: ComputeArgs,
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// Policy checkpoints of the same architecture and vocabulary.
    #[arg(required = true, num_args = 2..)]
    checkpoints: Vec<PathBuf>,
    /// θ = (1−λ)·θ_first + λ·θ_second (two checkpoints).
    #[arg(long, conflicts_with = "average")]
    lambda: Option<f64>,
    /// The uniform average of every checkpoint given.
    #[arg(long)]
    average: bool,
    /// The checkpoint to write.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct SweepArgs {
    /// Run folders of the β sweep (each with `student.safetensors`; β is read from the
    /// student's metadata or the folder's `run-config.toml`; one must have β = 0).
    #[arg(long, required = true, num_args = 1..)]
    runs: Vec<PathBuf>,
    /// The base model: the CFG and temperature baselines, and one end of `lerp-base`.
    #[arg(long, default_value = "runs/pretrain/last.safetensors")]
    base: PathBuf,
    #[arg(long, default_value = "runs/embedder.safetensors")]
    embedder: PathBuf,
    #[arg(long, default_value = "runs/judge.safetensors")]
    judge: PathBuf,
    /// The prepared dataset.
    #[arg(long, default_value = "data/folk")]
    data: PathBuf,
    /// Held-out test prompts (the first N of the test split).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..))]
    prompts: u32,
    /// Samples per prompt.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=64))]
    samples: u32,
    /// CFG strengths γ of the base model (1: no guidance).
    #[arg(long = "cfg", value_delimiter = ',', default_value = "1,1.5,2,3,4,5,7")]
    gammas: Vec<f64>,
    /// Temperatures of the base model and of the β = 0 student.
    #[arg(long, value_delimiter = ',', default_value = "0.7,0.85,1,1.15,1.3")]
    temperatures: Vec<f64>,
    /// LERP weights λ (default: 0 to 1 in steps of 0.1, or 0.05 with --fine).
    #[arg(long, value_delimiter = ',', conflicts_with = "fine")]
    lambdas: Option<Vec<f64>>,
    /// λ in steps of 0.05.
    #[arg(long)]
    fine: bool,
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Rows per sampling batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder: sweep.csv, summary.{json,md}, front/lerp/training .png and .svg,
    /// and the per-point cache in points/.
    #[arg(long, default_value = "runs/sweep")]
    out: PathBuf,
    /// No progress bar (log lines only).
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    compute: ComputeArgs,
}

/// The configuration of a service role.
#[derive(Debug, Args)]
struct ServiceArgs {
    /// TOML file layered over the built-in defaults (see configs/).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one setting, e.g. `--set learner.beta=5` (repeatable; wins over the file
    /// and the QD__SECTION__KEY environment).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Write this process's endpoints (pid, gRPC and metrics addresses) as JSON here once
    /// it listens (learner, actor, evaluator; the learner also writes
    /// `run_dir/endpoints.json`).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

impl ServiceArgs {
    fn settings(&self) -> Result<Settings> {
        Settings::load(self.config.as_deref(), &self.set)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SplitArg {
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

impl From<LogFormat> for common::settings::LogFormat {
    fn from(f: LogFormat) -> common::settings::LogFormat {
        match f {
            LogFormat::Text => common::settings::LogFormat::Text,
            LogFormat::Json => common::settings::LogFormat::Json,
        }
    }
}

/// Runs a service role on a tokio runtime, logging as its settings say.
fn service(
    args: &ServiceArgs,
    flag: Option<LogFormat>,
    role: fn(Settings, Option<PathBuf>) -> BoxFuture,
) -> Result<()> {
    let mut settings = args.settings()?;
    if let Some(f) = flag {
        settings.log.format = f.into();
    }
    init_logging(settings.log.format, &settings.log.level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(role(settings, args.ready_file.clone()))
}

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>>>>;

/// The folk task over the settings' data, embedder and judge.
fn folk_task(s: &Settings) -> Result<Arc<dyn Task>> {
    Ok(Arc::new(FolkTask::open(
        &s.paths.data,
        &s.paths.embedder,
        &s.paths.judge,
    )?))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Learner(a) => {
            return service(a, cli.log_format, |s, f| {
                Box::pin(async move {
                    let task = folk_task(&s)?;
                    learner::run(s, task, f.as_deref()).await.map(|_| ())
                })
            })
        }
        Command::Actor(a) => {
            return service(a, cli.log_format, |s, f| {
                Box::pin(async move {
                    let task = folk_task(&s)?;
                    actor::rollout::run(s, task, f.as_deref()).await
                })
            })
        }
        Command::Evaluator(a) => {
            return service(a, cli.log_format, |s, f| {
                Box::pin(async move {
                    let task = folk_task(&s)?;
                    actor::evaluator::run(s, task, f.as_deref()).await
                })
            })
        }
        Command::Run(a) => {
            return service(a, cli.log_format, |s, _| Box::pin(run::run(s)));
        }
        _ => {}
    }
    init_logging(
        cli.log_format
            .map_or(common::settings::LogFormat::Text, Into::into),
        "info",
    );
    match cli.command {
        Command::Learner(_) | Command::Actor(_) | Command::Evaluator(_) | Command::Run(_) => {}
        Command::Merge(a) => merge_cmd(a)?,
        Command::Sweep(a) => sweep_cmd(a)?,
        Command::Config(a) => {
            let settings = a.settings()?;
            println!("{}", serde_json::to_string_pretty(&settings)?);
        }
        Command::Health(a) => {
            let timeout = std::time::Duration::try_from_secs_f64(a.timeout)
                .map_err(|e| anyhow::anyhow!("--timeout {}: {e}", a.timeout))?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(health::check(&a.target, &a.service, timeout))?;
        }
        Command::Info { json } => {
            let info = model::device::info();
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                println!("{info:#?}");
            }
        }
        Command::Data(DataCommand::Prepare(a)) => data_prepare(a)?,
        Command::Pretrain(a) => pretrain_cmd(a)?,
        Command::Sample(a) => sample_cmd(a)?,
        Command::Eval(a) => eval_cmd(a)?,
        Command::Bench(BenchCommand::Generate(a)) => bench_generate_cmd(a)?,
        Command::Bench(BenchCommand::Service(a)) => {
            anyhow::ensure!(
                !a.actors.is_empty() && a.actors.iter().all(|&k| (1..=64).contains(&k)),
                "--actors takes counts from 1 to 64"
            );
            let r = bench_service::bench_service(
                a.service.config.as_deref(),
                &a.service.set,
                a.steps,
                &a.actors,
                a.subscribers as usize,
                a.reps as usize,
            )?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", r.table());
            }
        }
        Command::Embedder(EmbedderCommand::Train(a)) => embedder_train(a)?,
        Command::Judge(JudgeCommand::Train(a)) => judge_train(a)?,
        Command::Data(DataCommand::Export(a)) => data_export(a)?,
    }
    Ok(())
}

fn data_prepare(a: PrepareArgs) -> Result<()> {
    let start = Instant::now();
    let cfg = PrepareConfig {
        raw: a.raw,
        out: a.out.clone(),
        seed: a.seed,
        max_tokens: a.max_tokens as usize,
    };
    let summary = prepare(&cfg)?;
    let took = start.elapsed();
    let load = Instant::now();
    let ds = Dataset::load(&a.out)?;
    let load_ms = load.elapsed().as_secs_f64() * 1e3;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.table());
        println!(
            "\nwrote {} tunes to {} in {:.1}s (loads in {load_ms:.0} ms)",
            ds.records.len(),
            a.out.join("dataset.json").display(),
            took.as_secs_f64()
        );
    }
    tracing::info!(
        tunes = ds.records.len(),
        seconds = took.as_secs_f64(),
        load_ms,
        "dataset prepared"
    );
    Ok(())
}

fn data_export(a: ExportArgs) -> Result<()> {
    let ds = Dataset::load(&a.data)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut written = 0;
    for (i, r) in ds.split(a.split.into()).take(a.n).enumerate() {
        let tokens = ds.vocab.decode_tune(&r.tune)?;
        let abc = render::to_abc(&tokens, i as u32 + 1, &r.title);
        let stem = a.out.join(format!("{:02}", i + 1));
        write_atomic(&stem.with_extension("abc"), abc.as_bytes())?;
        let mid = midi::to_midi(&tokens, a.qpm).map_err(anyhow::Error::msg)?;
        write_atomic(&stem.with_extension("mid"), &mid)?;
        println!("% {} — \"{}\"\n{abc}", r.id, r.caption);
        written += 1;
    }
    println!(
        "wrote {written} tunes as .abc and .mid to {}",
        a.out.display()
    );
    Ok(())
}

fn pretrain_cmd(a: PretrainArgs) -> Result<()> {
    let device = a.compute.apply()?;
    anyhow::ensure!(
        (0.0..1.0).contains(&a.cond_dropout),
        "--cond-dropout must be in [0, 1)"
    );
    anyhow::ensure!(a.lr > 0.0 && a.lr.is_finite(), "--lr must be positive");
    let cfg = PretrainConfig {
        data: a.data,
        out: a.out,
        preset: a.preset,
        steps: a.steps,
        until: a.until,
        batch_size: a.batch_size as usize,
        context: a.context as usize,
        lr: a.lr,
        warmup: a.warmup.max(1),
        clip: a.clip,
        cond_dropout: a.cond_dropout,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
        seed: a.seed,
        device,
        progress: !a.no_progress,
    };
    let r = pretrain(&cfg)?;
    println!(
        "pre-trained {} steps in {:.0}s, validation loss {:.3}: {}",
        r.steps,
        r.seconds,
        r.val_loss,
        r.checkpoint.display()
    );
    Ok(())
}

fn sample_cmd(a: SampleArgs) -> Result<()> {
    let device = a.compute.apply()?;
    anyhow::ensure!(
        a.temperature > 0.0 && a.temperature.is_finite(),
        "--temperature must be positive"
    );
    let task =
        FolkTask::new(Dataset::load(&a.data)?, PathBuf::new(), PathBuf::new()).with_qpm(a.qpm);
    let (_vs, model, _ck) = load_policy(&a.checkpoint, &task.vocab_hash(), device)?;
    let (prompt, unknown) = task.dataset().vocab.encode_prompt(&a.prompt);
    if !unknown.is_empty() {
        eprintln!(
            "warning: words not in the prompt vocabulary (read as <unk>): {}",
            unknown.join(", ")
        );
    }
    let cfg = SamplingConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        cfg_gamma: a.cfg_gamma,
        cfg_plausibility: a.cfg_plausibility,
        cfg_scope: a.cfg_scope,
        max_new_tokens: a.max_new_tokens,
    };
    let n = a.n as usize;
    let seeds: Vec<u64> = (0..n as u64).map(|i| a.seed.wrapping_add(i)).collect();
    let samples = sample(&model, &vec![prompt; n], &seeds, task.vocabulary(), &cfg)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    for (i, ids) in samples.tokens.iter().enumerate() {
        let stem = a.out.join(format!("{:02}", i + 1));
        let written = task.write_sample(&a.prompt, ids, &stem)?;
        if let Some(note) = &written.note {
            eprintln!("warning: sample {}: {note}", i + 1);
        }
        let ended = if ids.last() == Some(&task.vocabulary().eos) {
            ""
        } else {
            " (cut at --max-new-tokens)"
        };
        println!("% sample {}{ended}\n{}", i + 1, written.text);
    }
    println!("wrote {n} tunes to {}", a.out.display());
    Ok(())
}

fn embedder_train(a: EncoderTrainArgs) -> Result<()> {
    let device = a.compute.apply()?;
    let out = a.out("runs/embedder.safetensors");
    create_parent(&out)?;
    let cfg = EmbedderConfig {
        data: a.data,
        out,
        steps: a.steps,
        batch_size: a.batch_size as usize,
        lr: a.lr,
        dim: 64,
        crop_min: 16,
        crop_max: 64,
        tau: 0.1,
        seed: a.seed,
        device,
        progress: !a.no_progress,
    };
    let r = train_embedder(&cfg)?;
    println!(
        "embedder trained in {:.0}s: validation retrieval accuracy {:.3} (batches of {}, chance {:.3}): {}",
        r.seconds,
        r.val_retrieval,
        cfg.batch_size,
        1.0 / cfg.batch_size as f64,
        r.checkpoint.display()
    );
    Ok(())
}

fn judge_train(a: EncoderTrainArgs) -> Result<()> {
    let device = a.compute.apply()?;
    let out = a.out("runs/judge.safetensors");
    create_parent(&out)?;
    let cfg = JudgeConfig {
        data: a.data,
        out,
        steps: a.steps,
        batch_size: a.batch_size as usize,
        lr: a.lr,
        seed: a.seed,
        device,
        progress: !a.no_progress,
    };
    let r = train_judge(&cfg)?;
    println!(
        "judge trained in {:.0}s: {}",
        r.seconds,
        r.checkpoint.display()
    );
    for (name, acc) in &r.val_accuracy {
        println!("  validation accuracy {name:<7} {acc:.3}");
    }
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> Result<()> {
    let device = a.compute.apply()?;
    anyhow::ensure!(
        a.temperature > 0.0 && a.temperature.is_finite(),
        "--temperature must be positive"
    );
    let task = FolkTask::open(&a.data, &a.embedder, &a.judge)?;
    let (_p, policy, _ck) = load_policy(&a.checkpoint, &task.vocab_hash(), device)?;
    let embedder = task.embedder(device)?;
    let judge = task.judge(device)?;
    let cfg = EvalConfig {
        k: a.k as usize,
        prompts: a.prompts,
        batch: a.batch,
        sampling: SamplingConfig {
            temperature: a.temperature,
            top_k: a.top_k,
            cfg_gamma: a.cfg_gamma,
            cfg_plausibility: a.cfg_plausibility,
            cfg_scope: a.cfg_scope,
            max_new_tokens: a.max_new_tokens,
        },
        seed: a.seed,
    };
    let r = evaluate(&policy, &task, embedder.as_ref(), judge.as_ref(), &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", r.table());
    }
    Ok(())
}

fn bench_generate_cmd(a: BenchGenerateArgs) -> Result<()> {
    let device = a.compute.apply()?;
    let task = FolkTask::new(Dataset::load(&a.data)?, PathBuf::new(), PathBuf::new());
    let tmp = tempfile::tempdir()?;
    let (_vs, model, checkpoint) = match &a.checkpoint {
        Some(path) => {
            let (vs, model, _ck) = load_policy(path, &task.vocab_hash(), device)?;
            (vs, model, path.clone())
        }
        None => {
            tch::manual_seed(0);
            let config = a.preset.config(task.vocab_size());
            let vs = tch::nn::VarStore::new(device);
            let model = model::transformer::Transformer::new(&vs.root(), &config);
            let path = tmp.path().join("init.safetensors");
            let stamp = Stamp {
                kind: ModelKind::Policy,
                config: &config,
                vocab_hash: &task.vocab_hash(),
                step: 0,
                version: 0,
                extra: serde_json::Value::Null,
            };
            save(&path, &vs, None, stamp)?;
            (vs, model, path)
        }
    };
    let cfg = BenchConfig {
        batch: a.batch as usize,
        new_tokens: a.new_tokens as usize,
        reps: a.reps as usize,
        cfg_gamma: a.cfg_gamma,
        python: (!a.no_reference).then_some(a.python),
        script: PathBuf::from("scripts/reference_generate.py"),
    };
    let r = bench_generate(&model, &checkpoint, &task, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", r.table());
    }
    Ok(())
}

fn merge_cmd(a: MergeArgs) -> Result<()> {
    use model::merge;
    let cks = merge::read_compatible(&a.checkpoints)?;
    let names: Vec<String> = a
        .checkpoints
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let (tensors, extra) = match (a.lambda, a.average) {
        (Some(l), false) => {
            anyhow::ensure!(
                cks.len() == 2,
                "--lambda merges exactly two checkpoints (got {})",
                cks.len()
            );
            (
                merge::lerp(&cks[0], &cks[1], l)?,
                serde_json::json!({"merge": "lerp", "lambda": l, "from": names}),
            )
        }
        (None, true) => (
            merge::average(&cks)?,
            serde_json::json!({"merge": "average", "from": names}),
        ),
        _ => anyhow::bail!("say how to merge: --lambda λ (two checkpoints) or --average"),
    };
    create_parent(&a.out)?;
    merge::write(&a.out, &cks[0], tensors, extra)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

fn sweep_cmd(a: SweepArgs) -> Result<()> {
    let device = a.compute.apply()?;
    let cfg = sweep::SweepConfig {
        runs: a.runs,
        base: a.base,
        out: a.out,
        prompts: a.prompts as usize,
        samples: a.samples as usize,
        seed: a.seed,
        batch: a.batch as usize,
        max_new_tokens: a.max_new_tokens,
        gammas: a.gammas,
        temperatures: a.temperatures,
        lambdas: a.lambdas.unwrap_or_else(|| sweep::default_lambdas(a.fine)),
        device,
        progress: !a.no_progress,
    };
    let task = FolkTask::open(&a.data, &a.embedder, &a.judge)?;
    let s = sweep::sweep(&cfg, &task)?;
    println!("{}", s.markdown());
    println!(
        "{} points: {} evaluated, {} cached",
        s.points, s.evaluated, s.cached
    );
    for name in ["sweep.csv", "summary.md", "summary.json"] {
        println!("wrote {}", cfg.out.join(name).display());
    }
    for png in &s.plots {
        println!("plot: {} (and .svg)", png.display());
    }
    Ok(())
}
