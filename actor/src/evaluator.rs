//! `qd evaluator`: an actor that sends nothing back. Whenever the learner's newest
//! version is at least `every_versions` past the last one scored, it evaluates those
//! weights on held-out prompts (as `qd eval`) and exports the numbers as `qd_evaluator_…`
//! metrics, with `qd_evaluator_version` saying which version they belong to; each result is
//! also appended to `eval.jsonl` in `evaluator.results_dir` (default: the run folder)
//! when that folder is reachable. When the run
//! finishes it scores the final version (unless it has), then stops.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use qd_proto::Role;
use tokio::sync::watch;

use common::settings::Settings;
use eval::evaluate::{evaluate, EvalConfig};
use model::sampling::SamplingConfig;
use model::task::Task;

use crate::broadcast::Weights;
use crate::metrics as m;
use crate::{run_client, wait_for_weights, Setup, Student};

/// Runs the evaluator until SIGTERM/Ctrl-C, a refusal by the learner or the end of the
/// run (after scoring the final version).
pub async fn run(settings: Settings, task: Arc<dyn Task>, ready_file: Option<&Path>) -> Result<()> {
    let e = settings.evaluator.clone();
    let (setup, metrics) = Setup::start(
        settings,
        task,
        &e.device,
        e.threads,
        &e.metrics_listen,
        &crate::metrics::evaluator(),
        ready_file,
    )
    .await?;
    let link = setup.link(Role::Evaluator, "")?;
    tracing::info!(name = link.identity.name, learner = link.settings.learner, metrics = ?metrics, "evaluator starting");
    let finished = link.finished.clone();
    run_client(link, None, move |weights, stop, rt| {
        evaluations(&setup, weights, stop, &finished, rt)
    })
    .await?;
    tracing::info!("evaluator stopped");
    Ok(())
}

/// Scores each due version until `stop`; when `finished` is set by then, the final
/// version too (if it was not scored).
fn evaluations(
    setup: &Setup,
    mut weights: watch::Receiver<Option<Arc<Weights>>>,
    mut stop: watch::Receiver<bool>,
    finished: &AtomicBool,
    rt: tokio::runtime::Handle,
) -> Result<()> {
    let e = &setup.settings.evaluator;
    let paths = &setup.settings.paths;
    let embedder = setup.task.embedder(setup.device)?;
    let judge = setup.task.judge(setup.device)?;
    let mut student = Student::new(
        &setup.model_config,
        &setup.vocab_hash,
        setup.device,
        &m::EVALUATOR_CLIENT,
    );
    let cfg = EvalConfig {
        split: e.split,
        k: e.samples_per_prompt,
        prompts: Some(e.prompts),
        batch: 64,
        sampling: SamplingConfig {
            max_new_tokens: e.max_new_tokens,
            ..SamplingConfig::default()
        },
        seed: e.seed,
        progress: false,
    };
    let mut last: Option<u64> = None;
    let mut last_step: Option<u64> = None;
    loop {
        let stopping = *stop.borrow();
        let last_one = stopping && finished.load(Ordering::SeqCst);
        if stopping && !last_one {
            return Ok(());
        }
        let latest = weights.borrow_and_update().clone();
        let due = latest.as_ref().is_some_and(|w| {
            last.is_none_or(|l| w.version >= l + e.every_versions || (last_one && w.version != l))
        });
        if !due {
            if last_one {
                return Ok(());
            }
            // Woken by new weights or by `stop`: the top of the loop tells which.
            wait_for_weights(&rt, &mut weights, &mut stop);
            continue;
        }
        student.update(latest.as_ref())?;
        let step = latest.as_ref().map_or(0, |w| w.step);
        let t0 = Instant::now();
        let r = evaluate(
            &student.model,
            setup.task.as_ref(),
            embedder.as_ref(),
            judge.as_ref(),
            &cfg,
        )
        .context("evaluating")?;
        let seconds = t0.elapsed().as_secs_f64();
        last = Some(student.version);
        for (name, v) in [
            (m::EVAL_VERSION, student.version as f64),
            (m::EVAL_STEP, step as f64),
            (m::EVAL_QUALITY, r.quality),
            (m::EVAL_ADHERENCE, r.adherence),
            (m::EVAL_VALIDITY, r.validity),
            (m::EVAL_EMBED_DIVERSITY, r.embed_diversity),
            (m::EVAL_EDIT_DIVERSITY, r.edit_diversity),
            (m::EVAL_SECONDS, seconds),
        ] {
            metrics::gauge!(name).set(v);
        }
        metrics::counter!(m::EVAL_TOKENS)
            .increment((r.mean_length * r.samples as f64).round() as u64);
        metrics::counter!(m::EVAL_RUNS).increment(1);
        tracing::info!(
            version = student.version,
            step,
            quality = format!("{:.3}", r.quality),
            embed_diversity = format!("{:.3}", r.embed_diversity),
            edit_diversity = format!("{:.3}", r.edit_diversity),
            seconds = format!("{seconds:.1}"),
            "evaluated"
        );
        let line = serde_json::json!({"version": student.version, "step": step, "seconds": seconds, "report": r});
        let dir = match e.results_dir.as_str() {
            "" => paths.run_dir.clone(),
            d => d.into(),
        };
        let path = dir.join("eval.jsonl");
        // A learner that resumed from a checkpoint takes steps again: their earlier
        // evaluations go, so that each step is logged once.
        if last_step.is_none_or(|l| step <= l) {
            if let Err(err) = model::fsutil::retain_steps(&path, |s| s < step) {
                tracing::debug!(path = %path.display(), "eval.jsonl not rewritten: {err}");
            }
        }
        last_step = Some(step);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(err) = written {
            tracing::warn!(path = %path.display(), "eval.jsonl not written: {err}");
        }
    }
}
