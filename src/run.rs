//! `qd run`: the learner, N actors and the evaluator as separate local processes of this
//! binary, on loopback, with one configuration. Logs are prefixed with the role; the
//! machine's cores are divided between the roles; Ctrl-C or SIGTERM stops them all (the
//! learner first, so that it writes its checkpoint). At the step budget the learner tells
//! the others the run has finished: the actors stop, the evaluator scores the final
//! version and stops, and `qd run` returns once all have. An actor or the evaluator that
//! fails is started again.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use common::settings::Settings;
use common::telemetry::Endpoints;
use indicatif::ProgressBar;

/// Restarts of one actor or evaluator after which `qd run` leaves it down.
const MAX_RESTARTS: u32 = 5;

/// How long the actors and the evaluator have to stop by themselves once the learner has
/// finished the run (the evaluator scores the final version first) before they are told.
const FINISH_WAIT: Duration = Duration::from_secs(600);

/// A started role.
struct Role {
    name: String,
    role: String,
    /// Handed over in the environment, never on the command line or in a file.
    token: String,
    extra: Vec<String>,
    child: Child,
    restarts: u32,
    given_up: bool,
    /// The run's progress bar, which the role's log lines are printed around.
    bar: ProgressBar,
}

impl Role {
    /// Starts the same process again (same name, role and settings).
    fn restart(&mut self, config: &Path) -> Result<()> {
        let fresh = spawn(
            &self.name,
            &self.role,
            config,
            &self.token,
            &self.extra,
            &self.bar,
        )?;
        self.child = fresh.child;
        self.restarts += 1;
        Ok(())
    }
}

/// Starts `qd <role>` with the effective settings plus `extra` overrides; its output is
/// prefixed with `[name]`.
fn spawn(
    name: &str,
    role: &str,
    config: &Path,
    token: &str,
    extra: &[String],
    bar: &ProgressBar,
) -> Result<Role> {
    let exe = std::env::current_exe().context("locating the qd binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg(role).arg("--config").arg(config);
    if !token.is_empty() {
        cmd.env("QD__AUTH__TOKEN", token);
    }
    for e in extra {
        cmd.arg("--set").arg(e);
    }
    if role != "learner" {
        cmd.arg("--ready-file")
            .arg(config.with_file_name(format!("{name}.endpoints.json")));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    for out in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let prefix = format!("[{name}]");
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                bar.suspend(|| eprintln!("{prefix} {line}"));
            }
        });
    }
    Ok(Role {
        name: name.to_string(),
        role: role.to_string(),
        token: token.to_string(),
        extra: extra.to_vec(),
        child,
        restarts: 0,
        given_up: false,
        bar: bar.clone(),
    })
}

/// Asks a role to stop (SIGTERM), as Ctrl-C or an orchestrator would.
fn terminate(r: &Role) {
    if let Some(pid) = r.child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

async fn stop_all(roles: &mut [Role]) {
    for r in roles.iter() {
        terminate(r);
    }
    for r in roles.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(30), r.child.wait()).await {
            Ok(Ok(status)) if !status.success() => {
                tracing::warn!(role = r.name, %status, "stopped with an error")
            }
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(role = r.name, "did not stop in 30 s; killing it");
                let _ = r.child.kill().await;
            }
        }
    }
}

/// Threads per role: the learner gets half the cores, the others share the rest.
fn threads(settings: &Settings) -> (usize, usize) {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let learner = (cores / 2).max(1);
    let others = settings.run.actors + usize::from(settings.run.evaluator);
    let each = ((cores - learner.min(cores)) / others.max(1)).max(1);
    (learner, each)
}

/// `host:port` with the port shifted by `by` (port 0 stays 0: any free port).
fn shift_port(listen: &str, by: u16) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(mut a) if a.port() != 0 && !listen.is_empty() => {
            a.set_port(a.port().saturating_add(by));
            a.to_string()
        }
        _ => listen.to_string(),
    }
}

/// Runs every role until the learner stops; returns when all have.
pub async fn run(settings: Settings) -> Result<()> {
    let (a, l) = (&settings.actor, &settings.learner);
    anyhow::ensure!(
        !a.synchronous || l.batch_prompts == settings.run.actors * a.batch_prompts,
        "actor.synchronous needs learner.batch_prompts ({}) = run.actors ({}) × actor.batch_prompts ({}): \
         each step then trains on one batch of every actor",
        l.batch_prompts,
        settings.run.actors,
        a.batch_prompts
    );
    let run_dir = settings.paths.run_dir.clone();
    let max_steps = settings.learner.max_steps;
    if let Some(step) =
        learner::trainer::resumable_step(&run_dir).filter(|&s| max_steps > 0 && s >= max_steps)
    {
        tracing::info!(
            run_dir = %run_dir.display(),
            step,
            max_steps,
            "the run has finished already: nothing to train (raise learner.max_steps to train on)"
        );
        print_outputs(&run_dir);
        return Ok(());
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let endpoints = run_dir.join("endpoints.json");
    let _ = std::fs::remove_file(&endpoints);
    // The children read exactly these settings (the environment they inherit cannot
    // change them again: the file already holds its effect).
    // The token is not written down: the children get it in their environment (or read
    // auth.token_file themselves).
    let config = run_dir.join("run-config.toml");
    let mut written = settings.clone();
    written.auth.token = String::new();
    model::fsutil::write_private(&config, toml::to_string(&written)?.as_bytes())?;
    let token = settings.auth.token.clone();
    let (learner_threads, each) = threads(&settings);
    let pick = |configured: usize, auto: usize| if configured > 0 { configured } else { auto };

    let bar = progress_bar(&settings);
    let mut roles = vec![spawn(
        "learner",
        "learner",
        &config,
        &token,
        &[format!(
            "learner.threads={}",
            pick(settings.learner.threads, learner_threads)
        )],
        &bar,
    )?];
    let learner_addr = tokio::select! {
        a = wait_for_endpoints(&endpoints, &mut roles[0]) => a,
        _ = common::shutdown::termination() => {
            stop_all(&mut roles).await;
            return Ok(());
        }
    };
    let learner_addr = match learner_addr {
        Ok(a) => a,
        Err(e) => {
            stop_all(&mut roles).await;
            return Err(e);
        }
    };
    let url = format!("http://{learner_addr}");
    tracing::info!(
        learner = url,
        actors = settings.run.actors,
        evaluator = settings.run.evaluator,
        "learner is up; starting the other roles"
    );
    for i in 0..settings.run.actors {
        roles.push(spawn(
            &format!("actor-{}", i + 1),
            "actor",
            &config,
            &token,
            &[
                format!("client.learner={url}"),
                format!("actor.threads={}", pick(settings.actor.threads, each)),
                format!("actor.seed={}", settings.actor.seed.wrapping_add(i as u64)),
                format!(
                    "actor.metrics_listen={}",
                    shift_port(&settings.actor.metrics_listen, i as u16)
                ),
                format!("actor.name=actor-{}", i + 1),
            ],
            &bar,
        )?);
    }
    if settings.run.evaluator {
        roles.push(spawn(
            "evaluator",
            "evaluator",
            &config,
            &token,
            &[
                format!("client.learner={url}"),
                format!(
                    "evaluator.threads={}",
                    pick(settings.evaluator.threads, each)
                ),
            ],
            &bar,
        )?);
    }

    // Supervise: an actor or the evaluator that fails while the learner runs is started
    // again (at most MAX_RESTARTS times each); one that exits 0 was told the run finished.
    // The bar follows the learner's step on its metrics endpoint.
    let learner_metrics = Endpoints::read(&endpoints).ok().and_then(|e| e.metrics);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let learner_status = loop {
        tokio::select! {
            s = roles[0].child.wait() => break Some(s?),
            _ = common::shutdown::termination() => break None,
            _ = tick.tick() => {
                if let Some(addr) = learner_metrics {
                    let step = tokio::task::spawn_blocking(move || {
                        common::telemetry::scrape(addr, "qd_learner_step", &[])
                    });
                    if let Ok(Some(step)) = step.await {
                        bar.set_position(step as u64);
                    }
                }
                for r in roles[1..].iter_mut().filter(|r| !r.given_up) {
                    let Ok(Some(status)) = r.child.try_wait() else { continue };
                    if status.success() {
                        tracing::info!(role = r.name, "stopped: the run finished");
                        r.given_up = true;
                    } else if r.restarts >= MAX_RESTARTS {
                        tracing::error!(role = r.name, %status, "exited again; left down after {MAX_RESTARTS} restarts");
                        r.given_up = true;
                    } else {
                        tracing::warn!(role = r.name, %status, restarts = r.restarts + 1, "exited; starting it again");
                        r.restart(&config)?;
                    }
                }
            }
        }
    };
    let learner_status = match learner_status {
        Some(s) => s,
        None => {
            tracing::info!("stopping every role");
            terminate(&roles[0]);
            let s = roles[0].child.wait().await?;
            stop_all(&mut roles[1..]).await;
            s
        }
    };
    if learner_status.success() {
        // The learner has told the others the run finished: they stop by themselves.
        let running: Vec<&mut Role> = roles[1..].iter_mut().filter(|r| !r.given_up).collect();
        let names: Vec<&str> = running.iter().map(|r| r.name.as_str()).collect();
        tracing::info!(waiting_for = ?names, "the learner has finished; waiting for the others to stop");
        let waited = tokio::time::timeout(FINISH_WAIT, async {
            for r in running {
                match r.child.wait().await {
                    Ok(status) if status.success() => {
                        tracing::info!(role = r.name, "stopped: the run finished")
                    }
                    Ok(status) => tracing::warn!(role = r.name, %status, "stopped with an error"),
                    Err(e) => tracing::warn!(role = r.name, "{e}"),
                }
            }
        });
        tokio::select! {
            w = waited => if w.is_err() {
                tracing::warn!("some roles did not stop within {} s of the end; stopping them", FINISH_WAIT.as_secs());
            },
            _ = common::shutdown::termination() => {}
        }
    }
    stop_all(&mut roles[1..]).await;
    bar.finish_and_clear();
    if !learner_status.success() {
        bail!("the learner stopped with {learner_status}");
    }
    print_outputs(&run_dir);
    Ok(())
}

/// The learner's steps against `learner.max_steps` (a spinner without a budget), on a
/// terminal and with text logs only.
fn progress_bar(settings: &Settings) -> ProgressBar {
    use std::io::IsTerminal;
    if settings.log.format == common::settings::LogFormat::Json || !std::io::stderr().is_terminal()
    {
        return ProgressBar::hidden();
    }
    let max_steps = settings.learner.max_steps;
    let bar = model::train::progress_bar(max_steps > 0, max_steps, 0)
        .unwrap_or_else(ProgressBar::new_spinner);
    bar.set_message("learner steps");
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

/// Where a run left its student, checkpoint and log.
fn print_outputs(run_dir: &Path) {
    let latest = learner::trainer::checkpoints(run_dir).into_iter().next();
    println!(
        "student weights: {}",
        run_dir.join("student.safetensors").display()
    );
    if let Some(c) = latest {
        println!(
            "last checkpoint (with optimizer state, resumable): {}",
            c.display()
        );
    }
    println!("training log: {}", run_dir.join("train.jsonl").display());
}

/// Waits for the learner's endpoints file; fails if the learner exits first.
async fn wait_for_endpoints(path: &Path, learner: &mut Role) -> Result<std::net::SocketAddr> {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            status = learner.child.wait() => bail!("the learner exited before listening ({})", status?),
            _ = tick.tick() => {
                if let Ok(e) = Endpoints::read(path) {
                    if let Some(a) = e.grpc {
                        return Ok(a);
                    }
                }
            }
        }
    }
}
