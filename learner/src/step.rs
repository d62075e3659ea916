//! One step of the learner on a batch: the loss `L_distill + β·L_pg`, its gradient taken
//! apart by term (so that each term's norm is known), clipping (the whole gradient, or
//! each term on its own) and the AdamW update; a batch whose loss or gradient is not
//! finite is skipped and leaves weights and optimizer as they were.

use anyhow::{Context, Result};
use tch::Tensor;

use common::settings::{GradClip, LearnerSettings};
use model::optim::{global_norm, AdamW};
use model::transformer::Transformer;

use crate::loss::{loss, Generatable, Loss, LossConfig, LossStats};
use crate::queue::Pair;

/// A step's gradient norms before clipping: the update's, and each term's.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct GradNorms {
    #[serde(rename = "grad_norm")]
    pub total: f64,
    /// Of `L_distill`.
    #[serde(rename = "grad_norm_distill")]
    pub distill: f64,
    /// Of `β·L_pg` (0 at β = 0).
    #[serde(rename = "grad_norm_pg")]
    pub pg: f64,
}

/// What [`train_step`] did with a batch.
#[derive(Debug)]
pub enum Step {
    /// One optimizer update, with the gradient norms before clipping.
    Applied {
        stats: LossStats,
        grad_norm: GradNorms,
    },
    /// No update: the loss or the gradient was not finite (the reason, as counted).
    Skipped { reason: &'static str },
}

/// How a step's gradient is clipped: to global norm `max`, the whole gradient at once or
/// each term of the loss on its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clipping {
    pub max: f64,
    pub scope: GradClip,
}

impl From<&LearnerSettings> for Clipping {
    fn from(l: &LearnerSettings) -> Clipping {
        Clipping {
            max: l.grad_clip,
            scope: l.grad_clip_scope,
        }
    }
}

/// One step of the learner on `pairs`: the loss, its gradient, clipping and an AdamW
/// update at `lr`, unless the loss or the gradient norm is not finite. Each term's
/// gradient norm is measured on the way ([`backward`]).
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    student: &Transformer,
    teacher: &Transformer,
    opt: &mut AdamW,
    g: &Generatable,
    pairs: &[Pair],
    baseline: f64,
    cfg: &LossConfig,
    lr: f64,
    clipping: Clipping,
) -> Result<Step> {
    opt.zero_grad();
    let l = loss(student, teacher, pairs, g, baseline, cfg).context("computing the loss")?;
    if !l.stats.loss.is_finite() {
        return Ok(Step::Skipped {
            reason: "non_finite_loss",
        });
    }
    let terms = backward(&l, opt, cfg.beta)?;
    let grad_norm = clip(opt, &terms, clipping);
    if !grad_norm.total.is_finite() {
        opt.zero_grad();
        return Ok(Step::Skipped {
            reason: "non_finite_gradient",
        });
    }
    opt.step(lr);
    Ok(Step::Applied {
        stats: l.stats,
        grad_norm,
    })
}

/// The step's gradient by term, as [`backward`] leaves it: the total in the optimizer's
/// gradients, the policy-gradient term's apart (at β ≠ 0), and each term's norm.
#[derive(Debug)]
pub struct Terms {
    /// The norm of `L_distill`'s gradient.
    pub distill: f64,
    /// The norm of `β·L_pg`'s gradient (0 at β = 0).
    pub pg: f64,
    /// `β·L_pg`'s gradient, in the order of `AdamW::params` (`None` at β = 0).
    pub pg_grads: Option<Vec<Tensor>>,
}

/// Back-propagates `l` into `opt`'s gradients and returns them by term. At β ≠ 0 the
/// policy-gradient term's gradient is taken apart first (one more backward pass, over
/// the graph the step keeps for it).
pub fn backward(l: &Loss, opt: &AdamW, beta: f64) -> Result<Terms> {
    let pg = if beta != 0.0 && l.weighted_pg.requires_grad() {
        Some(
            Tensor::f_run_backward(&[&l.weighted_pg], &opt.params(), true, false)
                .context("the policy-gradient term's gradient")?,
        )
    } else {
        None
    };
    l.total.backward();
    Ok(match pg {
        None => Terms {
            distill: global_norm(&opt.grads()),
            pg: 0.0,
            pg_grads: None,
        },
        Some(pg) => {
            let distill: Vec<Tensor> = tch::no_grad(|| {
                opt.grads()
                    .iter()
                    .zip(&pg)
                    .map(|(all, pg)| match (all.defined(), pg.defined()) {
                        (true, true) => all - pg,
                        _ => all.shallow_clone(),
                    })
                    .collect()
            });
            Terms {
                distill: global_norm(&distill),
                pg: global_norm(&pg),
                pg_grads: Some(pg),
            }
        }
    })
}

/// Clips the gradients [`backward`] left in `opt`; the norms before clipping. With
/// [`GradClip::PerTerm`] each term's gradient is scaled to norm at most `max` on its own
/// and the update is their sum, `s_d·g_distill + s_pg·g_pg`.
pub fn clip(opt: &mut AdamW, terms: &Terms, c: Clipping) -> GradNorms {
    let (distill, pg) = (terms.distill, terms.pg);
    let total = match (c.scope, &terms.pg_grads) {
        (GradClip::PerTerm, Some(pg_grads)) => {
            let total = global_norm(&opt.grads());
            if total.is_finite() {
                let scale = |n: f64| if n > c.max { c.max / (n + 1e-6) } else { 1.0 };
                let (sd, sp) = (scale(distill), scale(pg));
                tch::no_grad(|| {
                    for (mut g, p) in opt.grads().into_iter().zip(pg_grads) {
                        if !g.defined() {
                            continue;
                        }
                        let _ = g.g_mul_scalar_(sd);
                        if p.defined() {
                            let _ = g.g_add_(&(p * (sp - sd)));
                        }
                    }
                });
            }
            total
        }
        // One term, or the whole gradient at once.
        _ => opt.clip_grad_norm(c.max),
    };
    GradNorms { total, distill, pg }
}
