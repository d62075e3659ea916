//! `qd`: one binary for every role and tool. The work lives in the library crates
//! (`model`, `folk`, `eval`, `common`, `actor`, `learner`, and `qd-bench` for the
//! benchmarks); this crate parses the command line and wires them together:
//!
//! - `cli`: every clap definition (the `///` comments are the `--help` texts);
//! - `commands`: the command bodies, by concern (`data`, `train`, `models`, `bench`,
//!   `sweep`, `service`);
//! - `run`, `health`: the `qd run` supervisor and the health probe (`qd tls init`'s
//!   certificates are `common::tls`);
//! - here: the logging set-up and the dispatch of each command to its function.

use anyhow::Result;
use clap::{CommandFactory, Parser};
use common::telemetry::init_logging;

use cli::{BenchCommand, Cli, Command, DataCommand, EmbedderCommand, JudgeCommand};
use commands::{bench, data, models, service, sweep, train};

mod cli;
mod commands;
mod health;
mod run;

fn main() -> Result<()> {
    let cli = Cli::parse();
    let log = cli.log_format;
    // The service roles log as their settings say (the flag wins); the tools log at info.
    if !cli.command.is_service_role() {
        init_logging(
            log.map_or(common::settings::LogFormat::Text, Into::into),
            "info",
        );
    }
    match cli.command {
        Command::Data(DataCommand::Prepare(a)) => data::prepare(a),
        Command::Data(DataCommand::Export(a)) => data::export(a),
        Command::Pretrain(a) => train::pretrain(a),
        Command::Embedder(EmbedderCommand::Train(a)) => train::embedder(a),
        Command::Judge(JudgeCommand::Train(a)) => train::judge(a),
        Command::Sample(a) => models::sample(a),
        Command::Eval(a) => models::eval(a),
        Command::Compare(a) => models::compare(a),
        Command::Bench(BenchCommand::Generate(a)) => bench::generate(a),
        Command::Bench(BenchCommand::Service(a)) => bench::service(a),
        Command::Bench(BenchCommand::Learner(a)) => bench::learner(a),
        Command::Bench(BenchCommand::Pretrain(a)) => bench::pretrain(a),
        Command::Bench(BenchCommand::Scaling(a)) => bench::scaling(a),
        Command::Bench(BenchCommand::Faults(a)) => bench::faults(a),
        Command::Learner(a) => service::learner(&a, log),
        Command::Actor(a) => service::actor(&a, log),
        Command::Evaluator(a) => service::evaluator(&a, log),
        Command::Run(a) => service::run(&a, log),
        Command::Config(a) => service::config(&a),
        Command::Export(a) => models::export(a),
        Command::Merge(a) => models::merge(a),
        Command::Sweep(a) => sweep::sweep(a),
        Command::Curve(a) => sweep::curve(a),
        Command::Health(a) => service::health(&a),
        Command::Tls(c) => service::tls(c),
        Command::Info { json } => commands::info(json),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "qd", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out } => commands::man(&out),
    }
}
