//! The service roles (`qd learner`, `qd actor`, `qd evaluator`, `qd run`), and `qd config`
//! and `qd health` beside them.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use common::settings::Settings;
use common::telemetry::init_logging;
use folk::FolkTask;
use model::task::Task;

use crate::cli::{ConfigArgs, HealthArgs, LogFormat, ServiceArgs, TlsCommand};

pub fn learner(args: &ServiceArgs, flag: Option<LogFormat>) -> Result<()> {
    service(args, flag, |s, f| {
        Box::pin(async move {
            let task = folk_task(&s)?;
            learner::run(s, task, f.as_deref()).await.map(|_| ())
        })
    })
}

pub fn actor(args: &ServiceArgs, flag: Option<LogFormat>) -> Result<()> {
    service(args, flag, |s, f| {
        Box::pin(async move {
            let task = folk_task(&s)?;
            actor::rollout::run(s, task, f.as_deref()).await
        })
    })
}

pub fn evaluator(args: &ServiceArgs, flag: Option<LogFormat>) -> Result<()> {
    service(args, flag, |s, f| {
        Box::pin(async move {
            let task = folk_task(&s)?;
            actor::evaluator::run(s, task, f.as_deref()).await
        })
    })
}

/// `qd run`: the learner, the actors and the evaluator as local processes.
pub fn run(args: &ServiceArgs, flag: Option<LogFormat>) -> Result<()> {
    service(args, flag, |s, _| Box::pin(crate::run::run(s)))
}

/// `qd config`: the effective configuration as JSON.
pub fn config(args: &ConfigArgs) -> Result<()> {
    if args.reference {
        print!("{}", common::settings::reference());
        return Ok(());
    }
    let settings = args.service.settings()?;
    println!("{}", serde_json::to_string_pretty(&settings.redacted())?);
    Ok(())
}

/// `qd health`: exit 0 when the target is healthy.
pub fn health(a: &HealthArgs) -> Result<()> {
    let timeout = std::time::Duration::try_from_secs_f64(a.timeout)
        .map_err(|e| anyhow::anyhow!("--timeout {}: {e}", a.timeout))?;
    let tls = crate::health::Tls {
        ca: a.ca.clone(),
        domain: a.domain.clone(),
        identity: a.cert.clone().zip(a.key.clone()),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(crate::health::check(&a.target, &a.service, &tls, timeout))
}

/// `qd tls init`: a deployment's certificates.
pub fn tls(c: TlsCommand) -> Result<()> {
    match c {
        TlsCommand::Init { out, names } => {
            if common::tls::init(&out, &names)? {
                println!(
                    "wrote a CA, the learner's certificate ({} and localhost) and a client certificate into {}",
                    names.join(", "),
                    out.display()
                );
            } else {
                println!(
                    "{} already holds a learner certificate: kept (remove the folder to renew)",
                    out.display()
                );
            }
            Ok(())
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
