//! The training loop of the pre-training, the embedder and the judge ([`fit`]: a step
//! budget, the learning-rate schedule, gradient clipping, AdamW, a progress bar and a
//! stop on a non-finite loss) and its descent step ([`descend`]). The learner's step
//! (`learner::step`) takes its gradients apart by term, so it has its own.

use anyhow::{bail, Result};
use tch::Tensor;

use crate::optim::AdamW;

/// Linear warm-up to `lr`, then cosine decay to a tenth of it at `steps`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub lr: f64,
    pub warmup: u64,
    pub steps: u64,
}

impl Schedule {
    pub fn lr_at(&self, step: u64) -> f64 {
        let warmup = self.warmup.max(1);
        if step < warmup {
            return self.lr * (step + 1) as f64 / warmup as f64;
        }
        let t = (step - warmup) as f64 / (self.steps.saturating_sub(warmup).max(1)) as f64;
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
    }
}

/// A progress bar over `steps`, starting at `at` (`None` when disabled).
pub fn progress_bar(enabled: bool, steps: u64, at: u64) -> Option<indicatif::ProgressBar> {
    enabled.then(|| {
        let b = indicatif::ProgressBar::new(steps).with_position(at);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    })
}

/// One descent step on `loss`: its gradient, clipped to the global norm `clip`, then
/// AdamW at `lr`. Returns the gradient norm before clipping.
pub fn descend(opt: &mut AdamW, loss: &Tensor, clip: f64, lr: f64) -> f64 {
    opt.zero_grad();
    loss.backward();
    let grad_norm = opt.clip_grad_norm(clip);
    opt.step(lr);
    grad_norm
}

/// What a loop trains for: steps `from..until` of a `schedule`, gradients clipped to
/// `clip`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub schedule: Schedule,
    pub clip: f64,
    /// The first step (a resumed run's step).
    pub from: u64,
    /// The step to stop at (at most `schedule.steps`).
    pub until: u64,
    pub progress: bool,
}

impl Plan {
    /// The encoders' plan (the embedder, the judge): `steps` from scratch, a warm-up of
    /// a twentieth, gradients clipped to 1.
    pub fn encoder(lr: f64, steps: u64, progress: bool) -> Plan {
        Plan {
            schedule: Schedule {
                lr,
                warmup: steps / 20,
                steps,
            },
            clip: 1.0,
            from: 0,
            until: steps,
            progress,
        }
    }
}

/// One step taken: the step count after it, its loss, gradient norm (before clipping)
/// and learning rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stepped {
    pub step: u64,
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
}

/// Trains by `plan`: at each step `loss(step)` gives the loss (and whatever the step
/// wants to report, `T`), [`descend`] takes the step, and `after` sees it (to evaluate,
/// checkpoint with the optimizer's state) and returns the progress bar's message. Stops
/// with an error, before stepping, when the loss is not finite. Returns the last step taken (`None` when
/// the plan had none left).
pub fn fit<T>(
    opt: &mut AdamW,
    plan: &Plan,
    mut loss: impl FnMut(u64) -> (Tensor, T),
    mut after: impl FnMut(&Stepped, T, &AdamW) -> Result<String>,
) -> Result<Option<Stepped>> {
    let until = plan.until.min(plan.schedule.steps);
    let bar = progress_bar(plan.progress, until, plan.from);
    let mut last = None;
    for step in plan.from..until {
        let lr = plan.schedule.lr_at(step);
        let (l, report) = loss(step);
        // Checked before the step: a non-finite loss never reaches the weights.
        let value = l.double_value(&[]);
        if !value.is_finite() {
            bail!(
                "training loss became {value} at step {}; lower the learning rate",
                step + 1
            );
        }
        let grad_norm = descend(opt, &l, plan.clip, lr);
        let s = Stepped {
            step: step + 1,
            loss: value,
            grad_norm,
            lr,
        };
        let message = after(&s, report, opt)?;
        if let Some(b) = &bar {
            b.set_position(s.step);
            b.set_message(message);
        }
        last = Some(s);
    }
    if let Some(b) = bar {
        b.finish();
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tch::nn::{Init, VarStore};
    use tch::{Device, Kind};

    use crate::optim::AdamWConfig;

    /// A one-parameter quadratic, (w - 3)², from w = 0.
    fn quadratic() -> (VarStore, Tensor) {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[1], Init::Const(0.0));
        (vs, w)
    }

    fn plan(steps: u64) -> Plan {
        Plan {
            schedule: Schedule {
                lr: 0.1,
                warmup: 1,
                steps,
            },
            clip: 10.0,
            from: 0,
            until: steps,
            progress: false,
        }
    }

    #[test]
    fn fit_descends_takes_each_step_once_and_reports_it() {
        let (vs, w) = quadratic();
        let mut opt = AdamW::new(
            &vs,
            AdamWConfig {
                weight_decay: 0.0,
                ..Default::default()
            },
        );
        let mut seen = Vec::new();
        let last = fit(
            &mut opt,
            &plan(200),
            |step| ((&w - 3.0).square().sum(Kind::Float), step),
            |s, step, _| {
                assert_eq!(s.step, step + 1);
                seen.push(s.loss);
                Ok(String::new())
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(last.step, 200);
        assert_eq!(seen.len(), 200);
        assert!((seen[0] - 9.0).abs() < 1e-6, "{}", seen[0]);
        assert!(last.loss < 1e-2, "{last:?}");
        assert!((w.double_value(&[0]) - 3.0).abs() < 0.1);
    }

    #[test]
    fn a_resumed_plan_starts_where_it_was_and_stops_at_until() {
        let (vs, w) = quadratic();
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        let mut steps = Vec::new();
        let p = Plan {
            from: 5,
            until: 8,
            ..plan(10)
        };
        let last = fit(
            &mut opt,
            &p,
            |step| ((&w - 3.0).square().sum(Kind::Float), step),
            |_, step, _| {
                steps.push(step);
                Ok(String::new())
            },
        )
        .unwrap();
        assert_eq!(steps, [5, 6, 7]);
        assert_eq!(last.unwrap().lr, p.schedule.lr_at(7));
        // Nothing left to do.
        let done = Plan { from: 10, ..p };
        let none = fit(
            &mut opt,
            &done,
            |_| (w.sum(Kind::Float), ()),
            |_, _, _| Ok(String::new()),
        );
        assert!(none.unwrap().is_none());
    }

    #[test]
    fn fit_stops_on_a_loss_that_is_not_finite_and_on_an_error_after_a_step() {
        let (vs, w) = quadratic();
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        let e = fit(
            &mut opt,
            &plan(10),
            |step| {
                let l = (&w - 3.0).square().sum(Kind::Float);
                (if step == 3 { l * f64::NAN } else { l }, ())
            },
            |_, _, _| Ok(String::new()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("at step 4"), "{e}");
        // Three steps taken, none on the non-finite loss.
        let w3 = w.double_value(&[0]);
        assert!(w3.is_finite() && w3 > 0.0, "{w3}");
        let e = fit(
            &mut opt,
            &plan(10),
            |_| (w.sum(Kind::Float), ()),
            |s, _, _| {
                anyhow::ensure!(s.step < 2, "checkpoint failed");
                Ok(String::new())
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "checkpoint failed");
    }

    #[test]
    fn descend_clips_the_gradient_and_returns_its_norm_before() {
        let (vs, w) = quadratic();
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        // d/dw (w - 3)² at 0 = -6.
        let norm = descend(&mut opt, &(&w - 3.0).square().sum(Kind::Float), 1.0, 0.1);
        assert!((norm - 6.0).abs() < 1e-6, "{norm}");
        assert!(w.double_value(&[0]) > 0.0);
    }

    #[test]
    fn warm_up_then_cosine_to_a_tenth() {
        let s = Schedule {
            lr: 1.0,
            warmup: 10,
            steps: 110,
        };
        assert!((s.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(60) - 0.55).abs() < 1e-12);
        assert!((s.lr_at(110) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(500) - 0.1).abs() < 1e-12);
    }
}
