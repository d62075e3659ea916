//! AdamW written out, so that its state (step, first and second moments) can be saved
//! with the checkpoint and restored exactly; and gradient clipping by global norm.

use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// AdamW hyper-parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> AdamWConfig {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// The L2 norm of `tensors` taken together (undefined ones count as zero).
pub fn global_norm(tensors: &[Tensor]) -> f64 {
    tch::no_grad(|| {
        let sq: Vec<Tensor> = tensors
            .iter()
            .filter(|t| t.defined())
            .map(|g| g.pow_tensor_scalar(2).sum(Kind::Double))
            .collect();
        if sq.is_empty() {
            0.0
        } else {
            Tensor::stack(&sq, 0)
                .sum(Kind::Double)
                .sqrt()
                .double_value(&[])
        }
    })
}

/// One parameter and its moments.
#[derive(Debug)]
struct Slot {
    name: String,
    param: Tensor,
    m: Tensor,
    v: Tensor,
}

/// AdamW over every trainable variable of a `VarStore` (weight decay on matrices only).
#[derive(Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates applied so far.
    pub step: i64,
    slots: Vec<Slot>,
}

impl AdamW {
    pub fn new(vs: &VarStore, config: AdamWConfig) -> AdamW {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = vars
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, param)| Slot {
                m: param.zeros_like(),
                v: param.zeros_like(),
                name,
                param,
            })
            .collect();
        AdamW {
            config,
            step: 0,
            slots,
        }
    }

    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            let mut g = s.param.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// The parameters it updates, in its order (shallow copies).
    pub fn params(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.param.shallow_clone()).collect()
    }

    /// The accumulated gradients, in the order of [`AdamW::params`] (undefined where a
    /// parameter has none).
    pub fn grads(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.param.grad()).collect()
    }

    /// Scales gradients so that their global L2 norm is at most `max_norm`; returns the
    /// norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let norm = global_norm(&self.grads());
        if norm.is_finite() && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            tch::no_grad(|| {
                for s in &self.slots {
                    let mut g = s.param.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(scale);
                    }
                }
            });
        }
        norm
    }

    /// One update at learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let c = &self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for s in &mut self.slots {
                let g = s.param.grad();
                if !g.defined() {
                    continue;
                }
                let _ = s.m.g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
                let _ =
                    s.v.g_mul_scalar_(c.beta2)
                        .g_add_(&(g.square() * (1.0 - c.beta2)));
                if c.weight_decay > 0.0 && s.param.dim() >= 2 {
                    let _ = s.param.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let update = (&s.m / bc1) / ((&s.v / bc2).sqrt() + c.eps);
                let _ = s.param.g_sub_(&(update * lr));
            }
        });
    }

    /// The moments as named tensors (`m.<param>`, `v.<param>`) for the checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("m.{}", s.name), s.m.shallow_clone()),
                    (format!("v.{}", s.name), s.v.shallow_clone()),
                ]
            })
            .collect()
    }

    /// Restores the moments and step saved by [`AdamW::state`].
    pub fn load_state(&mut self, step: i64, state: &[(String, Tensor)]) -> Result<(), String> {
        let find = |n: &str| state.iter().find(|(k, _)| k == n).map(|(_, t)| t);
        tch::no_grad(|| {
            for s in &mut self.slots {
                for (prefix, dst) in [("m", &mut s.m), ("v", &mut s.v)] {
                    let key = format!("{prefix}.{}", s.name);
                    let src = find(&key).ok_or_else(|| format!("optimizer state lacks {key}"))?;
                    if src.size() != dst.size() {
                        return Err(format!(
                            "optimizer state {key} has shape {:?}, expected {:?}",
                            src.size(),
                            dst.size()
                        ));
                    }
                    dst.copy_(src);
                }
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}
