//! `qd`: one binary for every role and tool. This file parses arguments and wires the
//! library crates together; the work lives in `common`, `actor` and `learner`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use common::folk::dataset::{prepare, Dataset, PrepareConfig, Split};
use common::folk::{midi, render};
use common::fsutil::write_atomic;

/// Diversity-rewarded CFG distillation as a distributed actor/learner service.
#[derive(Debug, Parser)]
#[command(name = "qd", version, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
    /// Print the libtorch build qd runs on.
    Info {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Info { json } => {
            let info = common::torch::info();
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                println!("{info:#?}");
            }
        }
        Command::Data(DataCommand::Prepare(a)) => data_prepare(a)?,
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
