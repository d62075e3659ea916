//! `qd bench learner`: the learner's whole step (the teacher's two guided passes, the
//! student's forward and backward through `L_distill + β·L_pg`, clipping and AdamW) on a
//! fixed batch, timed against a PyTorch-eager reference of the same step
//! (`scripts/reference_learner.py`) that loads the same checkpoint and batch, and checked
//! against it: the loss, and the gradient and updated weights tensor by tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use common::settings::LearnerSettings;
use model::checkpoint::load_policy;
use model::optim::{AdamW, AdamWConfig};
use model::sampling::{CfgScope, SamplingConfig, Vocabulary};
use model::task::{Split, Task};
use model::transformer::Transformer;

use crate::generate::median;

use super::{
    forward_flop, interleaved, reference_tensor, rel_diff, start_reference, StepRate,
    REFERENCE_TENSORS,
};
use learner::loss::{loss, teacher_logprobs, Generatable, LossConfig, LossStats, LENGTH_GROUPS};
use learner::queue::{sample_pairs, Pair};
use learner::step::{backward, clip, train_step, Clipping, GradNorms, Step};

/// What to measure.
#[derive(Clone, Debug)]
pub struct StepBenchConfig {
    /// The learner's settings: loss, optimizer, `batch_prompts`.
    pub learner: LearnerSettings,
    /// Tokens sampled per sample (at most; a sample may end earlier at `<eos>`).
    pub new_tokens: usize,
    pub reps: usize,
    /// Steps compared with the reference on the batch before the timed ones: the first
    /// step's gradient, and the weights and AdamW moments after the last.
    pub compare_steps: usize,
    /// Python with torch, to run the reference (`None`: skip it).
    pub python: Option<PathBuf>,
    pub script: PathBuf,
    /// How the reference computes the task's structure features
    /// (`folk::metrical::python_port`), for a policy that embeds them.
    pub structure: Option<serde_json::Value>,
}

/// Median step seconds, and how far the reference's numbers are from qd's.
#[derive(Clone, Debug, Serialize)]
pub struct StepBenchReport {
    pub prompts: usize,
    pub samples: usize,
    /// Generated tokens in the batch (each costs a teacher row twice and a student row).
    pub tokens: usize,
    pub reps: usize,
    pub threads: i32,
    /// The step's time and rate, against PyTorch's.
    #[serde(flatten)]
    pub rate: StepRate,
    /// Where qd's step goes (medians of separately timed repetitions): the teacher's
    /// two passes, the student's forward and the loss, the backward pass, clipping and
    /// AdamW.
    pub breakdown: Breakdown,
    /// qd's first step on the batch.
    pub qd: LossStats,
    /// Gradient norms before clipping: the step's and each term's.
    pub qd_grad_norm: GradNorms,
    pub torch_loss: Option<f64>,
    pub torch_grad_norm: Option<GradNorms>,
    /// |loss_qd − loss_torch|.
    pub loss_diff: Option<f64>,
    /// The first step's gradient: the largest relative difference tensor by tensor
    /// (`max |g_qd − g_torch| / max |g_torch|` per weight), and the weight where it is.
    pub grad_rel_diff: Option<f64>,
    pub grad_worst: Option<String>,
    pub compare_steps: usize,
    /// Largest |θ_qd − θ_torch| after the compared steps, in units of the learning rate,
    /// over the weights whose first gradient is at least 1e-4 of the largest (Adam's
    /// update is about lr·sign(g), and the sign of a gradient within float noise of 0 is
    /// noise).
    pub param_diff_over_lr: Option<f64>,
    /// AdamW's first and second moments after the compared steps against
    /// `torch.optim.AdamW`'s `exp_avg` and `exp_avg_sq`: the largest relative difference
    /// tensor by tensor, and the tensor where it is.
    pub moment_rel_diff: Option<f64>,
    pub moment_worst: Option<String>,
}

/// Seconds of each part of qd's step.
#[derive(Clone, Debug, Serialize)]
pub struct Breakdown {
    pub teacher: f64,
    pub student_forward: f64,
    pub backward: f64,
    pub optimizer: f64,
}

/// A fixed batch: two samples of each of the first `prompts` training prompts, drawn
/// from `model`, with rewards that vary by pair and behaviour log-probabilities offset so
/// that half the pairs look stale (their importance weight clipped at ρ̄ = 1) and half
/// look fresher than the student (weight below 1).
///
/// With `full_length`, `<eos>` is not drawn: every sample has exactly `new_tokens` tokens.
pub(crate) fn batch(
    model: &Transformer,
    task: &dyn Task,
    prompts: usize,
    new_tokens: usize,
    full_length: bool,
) -> Result<Vec<Pair>> {
    let prompts: Vec<Vec<u32>> = task
        .prompts(Split::Train)
        .into_iter()
        .take(prompts)
        .map(|p| p.ids)
        .collect();
    let cfg = SamplingConfig {
        max_new_tokens: new_tokens,
        ..SamplingConfig::default()
    };
    let v = task.vocabulary();
    let v = if full_length {
        Vocabulary {
            eos: u32::MAX,
            allowed: v
                .allowed
                .iter()
                .copied()
                .filter(|&id| id != v.eos)
                .collect(),
            content_groups: Vec::new(),
            ..v.clone()
        }
    } else {
        v.clone()
    };
    let reward = |i: usize| ((i * 37) % 100) as f32 / 100.0;
    let mut pairs = sample_pairs(model, prompts, &v, &cfg, 0, 0, reward)?;
    // Behaviour log-probs off the student's by ±0.5 on the first token, alternating by
    // prompt: importance weights above and below ρ̄.
    for (i, p) in pairs.iter_mut().enumerate() {
        for (_, lp) in p.samples.iter_mut() {
            if let Some(first) = lp.first_mut() {
                *first += if i % 2 == 0 { 0.5 } else { -0.5 };
            }
        }
    }
    Ok(pairs)
}

/// One learner step's FLOPs on `pairs`: the teacher's conditional and unconditional
/// forwards, the student's forward and its backward (twice a forward).
/// `groups` 1: over the padded rows (what the reference computes); more: over the row
/// groups of similar length the loss runs (what qd computes).
pub(crate) fn step_flop(c: &model::config::ModelConfig, pairs: &[Pair], groups: usize) -> f64 {
    let lengths = |prompt: bool| -> Vec<i64> {
        pairs
            .iter()
            .flat_map(|p| {
                p.samples.iter().map(move |(y, _)| {
                    (y.len() + 1 + if prompt { p.prompt.len() } else { 0 }) as i64
                })
            })
            .collect()
    };
    let forward = |prompt: bool| -> f64 {
        model::batch::groups_by_length(&lengths(prompt), groups)
            .iter()
            .map(|(rows, t)| forward_flop(c, rows.len(), *t as usize))
            .sum()
    };
    // The conditional rows: the teacher's pass and the student's forward and backward.
    4.0 * forward(true) + forward(false)
}
/// The learner's optimizer settings.
pub(crate) fn adamw_config(l: &LearnerSettings) -> AdamWConfig {
    AdamWConfig {
        weight_decay: l.weight_decay,
        ..AdamWConfig::default()
    }
}

/// The mean reward of `pairs`, the baseline the benchmark's steps subtract.
pub(crate) fn mean_reward(pairs: &[Pair]) -> f64 {
    pairs.iter().map(|p| f64::from(p.reward)).sum::<f64>() / pairs.len().max(1) as f64
}

/// Median seconds of `reps` whole learner steps (`trainer::train_step`) on `pairs`.
pub(crate) fn timed_steps(
    student: &Transformer,
    teacher: &Transformer,
    opt: &mut AdamW,
    g: &Generatable,
    pairs: &[Pair],
    l: &LearnerSettings,
    reps: usize,
) -> Result<f64> {
    let mut step = stepper(student, teacher, opt, g, pairs, l);
    let seconds = (0..reps).map(|_| step()).collect::<Result<Vec<f64>>>()?;
    Ok(median(seconds))
}

/// Runs one whole learner step (`trainer::train_step`) on `pairs` at each call and
/// returns its seconds.
fn stepper<'a>(
    student: &'a Transformer,
    teacher: &'a Transformer,
    opt: &'a mut AdamW,
    g: &'a Generatable,
    pairs: &'a [Pair],
    l: &'a LearnerSettings,
) -> impl FnMut() -> Result<f64> + 'a {
    let (baseline, loss_cfg) = (mean_reward(pairs), LossConfig::from(l));
    move || {
        let start = Instant::now();
        let step = train_step(
            student,
            teacher,
            &mut *opt,
            g,
            pairs,
            baseline,
            &loss_cfg,
            l.lr,
            Clipping::from(l),
        )?;
        if let Step::Skipped { reason } = step {
            bail!("the benchmark's step was skipped: {reason}");
        }
        Ok(start.elapsed().as_secs_f64())
    }
}

/// Runs the benchmark with `checkpoint` as both teacher and the student's start.
pub fn bench_step(
    checkpoint: &Path,
    task: &dyn Task,
    cfg: &StepBenchConfig,
) -> Result<StepBenchReport> {
    let device = Device::Cpu;
    let l = &cfg.learner;
    let (mut teacher_vs, teacher, _) = load_policy(checkpoint, task, device)?;
    teacher_vs.freeze();
    let (student_vs, student, _) = load_policy(checkpoint, task, device)?;
    let pairs = batch(&student, task, l.batch_prompts, cfg.new_tokens, false)?;
    if pairs.len() < l.batch_prompts {
        bail!(
            "the task has fewer than {} training prompts",
            l.batch_prompts
        );
    }
    let g = Generatable::new(
        task.vocabulary().clone(),
        student.config.vocab_size as usize,
        device,
    );
    let loss_cfg = LossConfig::from(l);
    let opt_cfg = adamw_config(l);
    let mut opt = AdamW::new(&student_vs, opt_cfg.clone());
    let baseline = mean_reward(&pairs);

    // The compared steps: keep the first one's numbers and gradient.
    let mut compared = None;
    for _ in 0..cfg.compare_steps.max(1) {
        opt.zero_grad();
        let loss = loss(&student, &teacher, &pairs, &g, baseline, &loss_cfg)?;
        let terms = backward(&loss, &opt, loss_cfg.beta)?;
        let grads: Option<Vec<(String, Tensor)>> = compared.is_none().then(|| {
            student_vs
                .variables()
                .into_iter()
                .map(|(n, t)| (n, t.grad().copy()))
                .collect()
        });
        let norms = clip(&mut opt, &terms, Clipping::from(l));
        opt.step(l.lr);
        if let Some(grads) = grads {
            compared = Some((loss.stats, norms, grads));
        }
    }
    let (first, grad_norm, grads) = compared.context("no compared step")?;
    let moments: Vec<(String, Tensor)> = opt
        .state()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let params: HashMap<String, Tensor> = student_vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    // The reference starts now (it runs the compared first step at once), so that its
    // timed steps can alternate with qd's.
    let dir = tempfile::tempdir()?;
    let mut reference = match &cfg.python {
        None => None,
        Some(python) => {
            let v = task.vocabulary();
            let groups: Vec<Vec<usize>> = match l.cfg_scope {
                CfgScope::All => Vec::new(),
                CfgScope::Content => v.content_groups.clone(),
            };
            let body = serde_json::json!({
                "pairs": pairs.iter().map(|p| serde_json::json!({
                    "prompt": p.prompt,
                    "reward": p.reward,
                    "samples": p.samples.iter().map(|(t, lp)| serde_json::json!({"tokens": t, "logprobs": lp})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "baseline": baseline,
                "sep": v.sep, "pad": v.pad, "allowed": v.allowed, "groups": groups,
                "structure": student.config.structure.as_ref().and(cfg.structure.as_ref()),
                "loss": {
                    "beta": l.beta, "cfg_gamma": l.cfg_gamma, "cfg_plausibility": l.cfg_plausibility,
                    "divergence": l.divergence, "jsd_alpha": l.jsd_alpha, "rho_bar": l.rho_bar,
                },
                "optimizer": {
                    "lr": l.lr, "grad_clip": l.grad_clip, "grad_clip_scope": l.grad_clip_scope,
                    "weight_decay": opt_cfg.weight_decay,
                    "beta1": opt_cfg.beta1, "beta2": opt_cfg.beta2, "eps": opt_cfg.eps,
                },
                "compare_steps": cfg.compare_steps.max(1),
            });
            Some(start_reference(
                python,
                &cfg.script,
                dir.path(),
                &body,
                &[
                    "--teacher".as_ref(),
                    checkpoint.as_os_str(),
                    "--student".as_ref(),
                    checkpoint.as_os_str(),
                ],
            )?)
        }
    };
    let (qd_step_seconds, torch_step_seconds) = interleaved(
        cfg.reps,
        "step",
        stepper(&student, &teacher, &mut opt, &g, &pairs, l),
        reference.as_mut().map(|(r, _)| r),
    )?;
    let tokens = pairs
        .iter()
        .flat_map(|p| &p.samples)
        .map(|(t, _)| t.len())
        .sum();
    let mut parts: [Vec<f64>; 4] = Default::default();
    for _ in 0..cfg.reps {
        opt.zero_grad();
        let t = Instant::now();
        let _ = teacher_logprobs(&teacher, &pairs, &g, &loss_cfg);
        let teacher_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = loss(&student, &teacher, &pairs, &g, baseline, &loss_cfg)?;
        parts[0].push(teacher_s);
        parts[1].push((t.elapsed().as_secs_f64() - teacher_s).max(0.0));
        let t = Instant::now();
        let terms = backward(&out, &opt, loss_cfg.beta)?;
        parts[2].push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        clip(&mut opt, &terms, Clipping::from(l));
        opt.step(l.lr);
        parts[3].push(t.elapsed().as_secs_f64());
    }
    let [teacher_s, student_s, backward_s, optimizer_s] = parts.map(median);
    let breakdown = Breakdown {
        teacher: teacher_s,
        student_forward: student_s,
        backward: backward_s,
        optimizer: optimizer_s,
    };
    // The teacher's two forward passes and the student's forward and backward.
    let rate = StepRate::new(
        qd_step_seconds,
        step_flop(&student.config, &pairs, 1) / 1e9,
        step_flop(&student.config, &pairs, LENGTH_GROUPS) / 1e9,
        device,
    );
    let mut report = StepBenchReport {
        prompts: pairs.len(),
        samples: 2 * pairs.len(),
        tokens,
        reps: cfg.reps,
        threads: tch::get_num_threads(),
        rate,
        breakdown,
        qd: first,
        qd_grad_norm: grad_norm,
        torch_loss: None,
        torch_grad_norm: None,
        loss_diff: None,
        grad_rel_diff: None,
        grad_worst: None,
        compare_steps: cfg.compare_steps.max(1),
        param_diff_over_lr: None,
        moment_rel_diff: None,
        moment_worst: None,
    };
    let Some((r, first)) = reference else {
        return Ok(report);
    };
    r.finish()?;
    if let Some(t) = torch_step_seconds {
        report.rate.against(t);
    }
    report.torch_loss = first["loss"].as_f64();
    report.torch_grad_norm = match (
        first["grad_norm"].as_f64(),
        first["grad_norm_distill"].as_f64(),
        first["grad_norm_pg"].as_f64(),
    ) {
        (Some(total), Some(distill), Some(pg)) => Some(GradNorms { total, distill, pg }),
        _ => None,
    };
    report.loss_diff = report.torch_loss.map(|t| (t - report.qd.loss).abs());
    let theirs: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join(REFERENCE_TENSORS))?
            .into_iter()
            .collect();
    let (rel, worst, grad_scale) = rel_diff(&grads, &theirs, "grad.")?;
    report.grad_rel_diff = Some(rel);
    report.grad_worst = Some(worst);
    let (rel, worst, _) = rel_diff(&moments, &theirs, "")?;
    report.moment_rel_diff = Some(rel);
    report.moment_worst = Some(worst);
    let max = |t: Tensor| f64::try_from(t.max().to_kind(Kind::Double));
    // Adam's update is about lr·sign(g): where |g| is within float noise of 0 the sign is
    // noise, so the weights are compared where the first |g| ≥ 1e-4 · max |g|.
    let mut param_diff = 0f64;
    for (name, g) in &grads {
        let p = params
            .get(name)
            .with_context(|| format!("no weight {name}"))?;
        let theirs = reference_tensor(&theirs, &format!("param.{name}"), p)?;
        let clear = g.abs().ge(1e-4 * grad_scale);
        param_diff = param_diff.max(max((p - theirs).abs() * clear)?);
    }
    report.param_diff_over_lr = Some(param_diff / l.lr);
    Ok(report)
}

/// `total (distill, pg)`.
fn norms(n: &GradNorms) -> String {
    format!("{:.4} ({:.4}, {:.4})", n.total, n.distill, n.pg)
}

impl StepBenchReport {
    /// The report as a table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_string(), f);
        format!(
            "learner step: {} prompts, {} samples, {} generated tokens, {} threads, median of {} steps\n\
             {}\
             qd's step: teacher {:.4} s, student forward and loss {:.4} s, backward {:.4} s, clipping and AdamW {:.4} s\n\
             loss qd {:.6}  torch {}  |diff| {}\n\
             gradient norm (distillation, beta * policy gradient) qd {}  torch {}\n\
             first gradient, max |diff| / max |g| per weight  {} ({})\n\
             after {} steps: weights max |diff| / lr  {}; AdamW moments max |diff| / max |m| per tensor  {} ({})\n",
            self.prompts,
            self.samples,
            self.tokens,
            self.threads,
            self.reps,
            self.rate.lines(LENGTH_GROUPS),
            self.breakdown.teacher,
            self.breakdown.student_forward,
            self.breakdown.backward,
            self.breakdown.optimizer,
            self.qd.loss,
            opt(self.torch_loss, &|v| format!("{v:.6}")),
            opt(self.loss_diff, &|v| format!("{v:.2e}")),
            norms(&self.qd_grad_norm),
            self.torch_grad_norm.as_ref().map_or("-".to_string(), norms),
            opt(self.grad_rel_diff, &|v| format!("{v:.2e}")),
            self.grad_worst.as_deref().unwrap_or("-"),
            self.compare_steps,
            opt(self.param_diff_over_lr, &|v| format!("{v:.2e}")),
            opt(self.moment_rel_diff, &|v| format!("{v:.2e}")),
            self.moment_worst.as_deref().unwrap_or("-"),
        )
    }
}
