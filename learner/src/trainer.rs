//! The learner's compute thread: takes batches from the queue (dropping stale
//! trajectories), applies `L = L_distill + β·L_pg` with AdamW, publishes the student every
//! `publish_every` steps, checkpoints every `checkpoint_every` steps and when told to
//! stop, and resumes from the newest readable checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::nn::VarStore;
use tch::Device;
use tokio::sync::watch;

use common::settings::{Baseline, LearnerSettings};
use model::checkpoint::{read_policy, save, serialize, Checkpoint, ModelKind, Stamp};
use model::optim::{AdamW, AdamWConfig};
use model::task::Task;
use model::train::Schedule;
use model::transformer::Transformer;

use crate::broadcast::{Published, Publisher};
use crate::loss::{Generatable, LossConfig, LossStats};
use crate::metrics as m;
use crate::queue::{self, Pair};
use crate::step::{train_step, Clipping, GradNorms, Step};

/// Why the trainer stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It reached `max_steps`.
    Budget,
    /// It was told to (SIGTERM, Ctrl-C).
    Signal,
}

/// What the trainer leaves behind.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub stopped: Stopped,
    pub step: u64,
    pub version: u64,
    /// The last checkpoint (with optimizer state).
    pub checkpoint: PathBuf,
    /// The student's weights alone, for `qd eval`, `qd sample` and merging.
    pub student: PathBuf,
}

/// One line of `train.jsonl`.
#[derive(Debug, serde::Serialize)]
struct LogLine<'a> {
    step: u64,
    version: u64,
    unix_time: f64,
    lr: f64,
    #[serde(flatten)]
    grad_norm: GradNorms,
    step_seconds: f64,
    /// Prompts (sample pairs) in the step.
    pairs: usize,
    samples_per_second: f64,
    /// Trajectories dropped as stale so far (refused at intake or grown stale in the
    /// queue).
    stale_dropped: u64,
    mean_staleness: f64,
    beta: f64,
    #[serde(flatten)]
    loss: &'a LossStats,
}

/// The learner's models, optimizer and counters.
#[derive(Debug)]
pub struct Trainer {
    cfg: LearnerSettings,
    run_dir: PathBuf,
    publisher: Arc<Publisher>,
    student_vs: VarStore,
    student: Transformer,
    _teacher_vs: VarStore,
    teacher: Transformer,
    opt: AdamW,
    generatable: Generatable,
    vocab_hash: String,
    ema: Option<f64>,
    step: u64,
    version: u64,
    log: std::fs::File,
    /// Failed writes so far: `train.jsonl` lines, checkpoints.
    log_failures: u64,
    checkpoint_failures: u64,
}

fn checkpoint_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Removes what an atomic write killed midway left (`.<name>.<pid>.tmp`) in the run
/// folder and its checkpoints: only one learner works in a run folder, so none is live.
fn remove_stray_temp_files(run_dir: &Path) {
    for dir in [run_dir.to_path_buf(), checkpoint_dir(run_dir)] {
        for (path, _) in model::fsutil::temp_files(&dir) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a write a crash interrupted")
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), "could not remove a stray temporary file: {err}")
                }
            }
        }
    }
}

/// The file holding the highest version this run folder's learner ever published.
fn published_file(run_dir: &Path) -> PathBuf {
    run_dir.join("published-version")
}

/// The highest version published from `run_dir` (0 when none was). A file that cannot
/// be read or holds no number is an error: guessing low could reuse a version number.
fn last_published(run_dir: &Path) -> Result<u64> {
    let path = published_file(run_dir);
    match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        Ok(text) => text.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "{} holds {:?}, not a version number: restore it, or remove it to number versions from the newest checkpoint's (clients holding later numbers then skip the versions up to them)",
                path.display(),
                crate::server::clip(text.trim())
            )
        }),
    }
}

/// Counts a failed write of `file` and logs it at ERROR (the first, then every
/// hundredth of a kind: a full disk fails every step).
fn write_failed(file: &'static str, failures: &mut u64, err: &dyn std::fmt::Display) {
    metrics::counter!(m::WRITE_FAILURES, "file" => file).increment(1);
    if *failures % 100 == 0 {
        tracing::error!(
            file,
            failures = *failures + 1,
            "writing failed, training goes on: {err}"
        );
    }
    *failures += 1;
}

/// Checkpoints in `run_dir`, newest first.
pub fn checkpoints(run_dir: &Path) -> Vec<PathBuf> {
    let found = model::checkpoint::numbered(&checkpoint_dir(run_dir));
    found.into_iter().rev().map(|(_, p)| p).collect()
}

/// The step a learner on `run_dir` would resume from: the newest readable checkpoint's.
pub fn resumable_step(run_dir: &Path) -> Option<u64> {
    checkpoints(run_dir)
        .iter()
        .find_map(|p| Checkpoint::read(p).ok())
        .map(|c| c.meta.step)
}

impl Trainer {
    /// Loads the teacher and the student (from the newest readable checkpoint of
    /// `run_dir`, else from the base model) and publishes the student.
    pub fn new(
        cfg: LearnerSettings,
        base: &Path,
        run_dir: &Path,
        task: &dyn Task,
        publisher: Arc<Publisher>,
        device: Device,
    ) -> Result<Trainer> {
        let vocab_hash = task.vocab_hash();
        let base_ck = read_policy(base, task).context("loading the base model (the teacher)")?;
        let config = base_ck.meta.config.clone();
        let mut teacher_vs = VarStore::new(device);
        let teacher = Transformer::new(&teacher_vs.root(), &config);
        base_ck.load_into(&mut teacher_vs)?;
        teacher_vs.freeze();

        let mut student_vs = VarStore::new(device);
        let student = Transformer::new(&student_vs.root(), &config);
        let mut opt = AdamW::new(
            &student_vs,
            AdamWConfig {
                weight_decay: cfg.weight_decay,
                ..AdamWConfig::default()
            },
        );
        let (mut step, mut version, mut ema) = (0, 0, None);
        // The newest checkpoint that reads and verifies; a damaged one is skipped, but one
        // of another model stops the learner (starting over would rotate it away).
        let mut resumed = None;
        for p in checkpoints(run_dir) {
            match Checkpoint::read_for(&p, ModelKind::Policy, &vocab_hash)
                .and_then(|ck| ck.check_compatible(&config, &vocab_hash).map(|_| ck))
            {
                Ok(ck) => {
                    resumed = Some((p, ck));
                    break;
                }
                Err(e) if e.is_damaged() => {
                    tracing::warn!(path = %p.display(), "skipping a damaged checkpoint: {e}");
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "{} holds checkpoints of another model: use another run_dir",
                        run_dir.display()
                    )))
                }
            }
        }
        match resumed {
            Some((path, ck)) => {
                ck.load_into(&mut student_vs)?;
                if let Some((s, state)) = ck.optimizer_state() {
                    opt.load_state(s, &state).map_err(anyhow::Error::msg)?;
                }
                step = ck.meta.step;
                version = ck.meta.version;
                ema = ck.meta.extra.get("baseline_ema").and_then(|v| v.as_f64());
                if let Some(seed) = ck.meta.extra.get("seed").and_then(|v| v.as_u64()) {
                    tch::manual_seed((seed.wrapping_add(step)) as i64);
                }
                tracing::info!(path = %path.display(), step, version, "resumed from checkpoint");
            }
            None => {
                base_ck.load_into(&mut student_vs)?;
                tch::manual_seed(cfg.seed as i64);
                tracing::info!(base = %base.display(), "starting from the base model");
            }
        }
        remove_stray_temp_files(run_dir);
        // Versions published after the checkpoint (or before the checkpoints were
        // removed) held other weights: the next one is above every number this run
        // folder ever published.
        version = version.max(last_published(run_dir)?);
        std::fs::create_dir_all(checkpoint_dir(run_dir))
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let log_path = run_dir.join("train.jsonl");
        // Steps after the checkpoint will be taken again: their lines go, so that each
        // step is logged once.
        model::fsutil::retain_steps(&log_path, |s| s <= step)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let generatable = Generatable::new(
            task.vocabulary().clone(),
            config.vocab_size as usize,
            device,
        );
        let mut t = Trainer {
            cfg,
            run_dir: run_dir.to_path_buf(),
            publisher,
            student_vs,
            student,
            _teacher_vs: teacher_vs,
            teacher,
            opt,
            generatable,
            vocab_hash,
            ema,
            step,
            version,
            log,
            log_failures: 0,
            checkpoint_failures: 0,
        };
        t.publisher.trained(step);
        // A new version even after a resume: actors that got versions published after
        // this checkpoint must not keep weights the learner no longer has.
        t.publish()?;
        Ok(t)
    }

    fn stamp(&self) -> Stamp<'_> {
        Stamp {
            kind: ModelKind::Policy,
            config: &self.student.config,
            vocab_hash: &self.vocab_hash,
            step: self.step,
            version: self.version,
            extra: serde_json::json!({
                "baseline_ema": self.ema,
                "seed": self.cfg.seed,
                "beta": self.cfg.beta,
                "cfg_gamma": self.cfg.cfg_gamma,
                "cfg_plausibility": self.cfg.cfg_plausibility,
                "cfg_scope": self.cfg.cfg_scope,
            }),
        }
    }

    /// Refuses to let non-finite weights leave the learner (published or checkpointed).
    fn check_finite(&self) -> Result<()> {
        let bad: Vec<String> = tch::no_grad(|| {
            self.student_vs
                .variables()
                .into_iter()
                .filter(|(_, t)| !bool::try_from(t.isfinite().all()).unwrap_or(false))
                .map(|(name, _)| name)
                .collect()
        });
        anyhow::ensure!(
            bad.is_empty(),
            "the student's weights are not finite at step {} ({}): refusing to publish or checkpoint them",
            self.step,
            bad.join(", ")
        );
        Ok(())
    }

    fn publish(&mut self) -> Result<()> {
        self.check_finite()?;
        let t0 = Instant::now();
        self.version += 1;
        // Recorded before anyone can hold it, so that a restart never reuses the number.
        model::fsutil::write_atomic(
            &published_file(&self.run_dir),
            self.version.to_string().as_bytes(),
        )
        .context("recording the published version")?;
        let blob = serialize(&self.student_vs, None, self.stamp())?;
        self.publisher
            .publish(Published::new(self.version, self.step, blob));
        metrics::histogram!(m::PUBLISH_SECONDS).record(t0.elapsed().as_secs_f64());
        Ok(())
    }

    /// Writes a checkpoint (and the student alone), keeping the newest few.
    pub fn checkpoint(&self) -> Result<PathBuf> {
        self.check_finite()?;
        self.write_checkpoint()
    }

    /// [`Self::checkpoint`] without the check: a failure here is the disk's.
    fn write_checkpoint(&self) -> Result<PathBuf> {
        let dir = checkpoint_dir(&self.run_dir);
        let path = dir.join(format!("step-{:08}.safetensors", self.step));
        save(&path, &self.student_vs, Some(&self.opt), self.stamp())?;
        save(
            &self.run_dir.join("student.safetensors"),
            &self.student_vs,
            None,
            self.stamp(),
        )?;
        for old in checkpoints(&self.run_dir)
            .into_iter()
            .skip(self.cfg.keep_checkpoints)
        {
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!(path = %old.display(), "could not delete an old checkpoint: {e}");
            }
        }
        tracing::info!(path = %path.display(), step = self.step, version = self.version, "checkpoint written");
        Ok(path)
    }

    fn baseline(&mut self, pairs: &[Pair]) -> f64 {
        let mean =
            pairs.iter().map(|p| f64::from(p.reward)).sum::<f64>() / pairs.len().max(1) as f64;
        match self.cfg.baseline {
            Baseline::None => 0.0,
            Baseline::BatchMean => mean,
            Baseline::Ema => {
                let b = self.ema.unwrap_or(mean);
                self.ema = Some(self.cfg.ema_decay * b + (1.0 - self.cfg.ema_decay) * mean);
                b
            }
        }
    }

    fn lr(&self) -> f64 {
        let steps = if self.cfg.max_steps > 0 {
            self.cfg.max_steps
        } else {
            u64::MAX
        };
        Schedule {
            lr: self.cfg.lr,
            warmup: self.cfg.warmup_steps,
            steps,
        }
        .lr_at(self.step)
    }

    /// Trains until the step budget or `stop`; writes the final checkpoint.
    pub fn run(
        mut self,
        mut rx: queue::Receiver,
        mut stop: watch::Receiver<bool>,
        rt: tokio::runtime::Handle,
    ) -> Result<Outcome> {
        let loss_cfg = LossConfig::from(&self.cfg);
        metrics::gauge!(m::STEP).set(self.step as f64);
        let mut last_checkpoint = None;
        // `Trainer::new` published the weights it starts from.
        let mut published_at = self.step;
        let stopped = loop {
            if self.cfg.max_steps > 0 && self.step >= self.cfg.max_steps {
                break Stopped::Budget;
            }
            let wait = Instant::now();
            let next = rt.block_on(rx.next_batch(self.cfg.batch_prompts, self.version, &mut stop));
            let Some(queue::Batch {
                pairs,
                mean_staleness,
            }) = next
            else {
                break Stopped::Signal;
            };
            let t0 = Instant::now();
            let baseline = self.baseline(&pairs);
            let lr = self.lr();
            let (stats, grad_norm) = match train_step(
                &self.student,
                &self.teacher,
                &mut self.opt,
                &self.generatable,
                &pairs,
                baseline,
                &loss_cfg,
                lr,
                Clipping::from(&self.cfg),
            )? {
                Step::Applied { stats, grad_norm } => (stats, grad_norm),
                Step::Skipped { reason } => {
                    // Never step on a non-finite number: skip the batch, keep the weights.
                    metrics::counter!(m::DROPPED, "reason" => reason).increment(pairs.len() as u64);
                    tracing::error!(step = self.step, reason, "batch skipped");
                    continue;
                }
            };
            self.step += 1;
            self.publisher.trained(self.step);
            let step_seconds = t0.elapsed().as_secs_f64();
            let samples_per_second =
                (2 * pairs.len()) as f64 / wait.elapsed().as_secs_f64().max(1e-9);
            let s = &stats;
            for (name, v) in [
                (m::STEP, self.step as f64),
                (m::LOSS, s.loss),
                (m::DISTILL_LOSS, s.distill),
                (m::PG_LOSS, s.pg),
                (m::KL, s.kl),
                (m::ENTROPY, s.entropy),
                (m::REWARD_MEAN, s.reward_mean),
                (m::REWARD_STD, s.reward_std),
                (m::BASELINE, s.baseline),
                (m::GRAD_NORM, grad_norm.total),
                (m::GRAD_NORM_DISTILL, grad_norm.distill),
                (m::GRAD_NORM_PG, grad_norm.pg),
                (m::CLIPPED_PAIRS, s.clip_fraction),
                (m::PAIR_WEIGHT_MEAN, s.weight_mean),
                (m::PAIR_WEIGHT_MIN, s.weight_min),
                (m::PAIR_WEIGHT_ESS, s.weight_ess),
                (m::LR, lr),
            ] {
                metrics::gauge!(name).set(v);
            }
            metrics::histogram!(m::STEP_SECONDS).record(step_seconds);
            metrics::counter!(m::SAMPLES).increment(2 * pairs.len() as u64);
            let line = LogLine {
                step: self.step,
                version: self.version,
                unix_time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                lr,
                grad_norm,
                step_seconds,
                pairs: pairs.len(),
                samples_per_second,
                stale_dropped: rx.counts().stale,
                mean_staleness,
                beta: self.cfg.beta,
                loss: s,
            };
            if let Ok(json) = serde_json::to_string(&line) {
                if let Err(e) = writeln!(self.log, "{json}") {
                    write_failed("train.jsonl", &mut self.log_failures, &e);
                }
            }
            if self.step % 10 == 0 || self.step == 1 {
                tracing::info!(
                    step = self.step,
                    version = self.version,
                    kl = format!("{:.4}", s.kl),
                    reward = format!("{:.3}", s.reward_mean),
                    step_s = format!("{step_seconds:.2}"),
                    "trained"
                );
            }
            if self.step % self.cfg.publish_every == 0 {
                self.publish()?;
                published_at = self.step;
            }
            if self.step % self.cfg.checkpoint_every == 0 {
                // A checkpoint that cannot be written (a full disk) leaves the older
                // ones as they are; training goes on and the next one is tried in turn.
                self.check_finite()?;
                match self.write_checkpoint() {
                    Ok(p) => last_checkpoint = Some(p),
                    Err(e) => write_failed(
                        "checkpoint",
                        &mut self.checkpoint_failures,
                        &format!("{e:#}"),
                    ),
                }
            }
        };
        // The final version goes out, whatever `publish_every` is: clients that hear the
        // run has finished hold the trained weights.
        if stopped == Stopped::Budget && published_at != self.step {
            self.publish()?;
        }
        let checkpoint =
            match last_checkpoint.filter(|_| self.step % self.cfg.checkpoint_every == 0) {
                Some(p) => p,
                None => self.checkpoint()?,
            };
        Ok(Outcome {
            stopped,
            step: self.step,
            version: self.version,
            checkpoint,
            student: self.run_dir.join("student.safetensors"),
        })
    }
}
