//! Weight-space merging of policy checkpoints: LERP `θ = (1−λ)·θ_a + λ·θ_b` (the
//! deployment-time quality/diversity knob) and the uniform average of N checkpoints.
//! Every input must be a policy of the same architecture and vocabulary; the output is
//! an ordinary checkpoint (no optimizer state).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::checkpoint::{save, Checkpoint, ModelKind, Stamp};
use super::transformer::Transformer;

/// Reads policy checkpoints and refuses any that differ from the first in architecture,
/// vocabulary or tensors, saying what differs.
pub fn read_compatible(paths: &[PathBuf]) -> Result<Vec<Checkpoint>> {
    let mut cks = Vec::with_capacity(paths.len());
    for p in paths {
        let ck = Checkpoint::read(p)?;
        if ck.meta.kind != ModelKind::Policy {
            bail!(
                "{} holds a {:?} model; only policies are merged",
                p.display(),
                ck.meta.kind
            );
        }
        if let Some(first) = cks.first() {
            let first: &Checkpoint = first;
            ck.check_compatible(&first.meta.config, &first.meta.vocab_hash)
                .with_context(|| {
                    format!(
                        "{} cannot be merged with {}",
                        p.display(),
                        paths[0].display()
                    )
                })?;
        }
        cks.push(ck);
    }
    Ok(cks)
}

/// `a + λ·(b − a)`; λ = 0 and λ = 1 give `a` and `b` bit for bit.
pub fn lerp(a: &Checkpoint, b: &Checkpoint, lambda: f64) -> Result<Vec<(String, Tensor)>> {
    if !(0.0..=1.0).contains(&lambda) {
        bail!("λ must be in [0, 1] (got {lambda})");
    }
    let bt: std::collections::HashMap<&str, &Tensor> = b.tensors().collect();
    a.tensors()
        .map(|(name, ta)| {
            let tb = bt
                .get(name)
                .with_context(|| format!("the second checkpoint lacks {name}"))?;
            let t = if lambda == 0.0 {
                ta.copy()
            } else if lambda == 1.0 {
                tb.copy()
            } else {
                ta + (*tb - ta) * lambda
            };
            Ok((name.to_string(), t))
        })
        .collect()
}

/// The uniform average, as a running mean (so N identical inputs give that input exactly).
pub fn average<C: std::borrow::Borrow<Checkpoint>>(cks: &[C]) -> Result<Vec<(String, Tensor)>> {
    let Some(first) = cks.first().map(C::borrow) else {
        bail!("nothing to average");
    };
    let mut mean: Vec<(String, Tensor)> = first
        .tensors()
        .map(|(n, t)| (n.to_string(), t.copy()))
        .collect();
    for (k, ck) in cks.iter().enumerate().skip(1) {
        let other: std::collections::HashMap<&str, &Tensor> = ck.borrow().tensors().collect();
        for (name, m) in &mut mean {
            let t = other
                .get(name.as_str())
                .with_context(|| format!("checkpoint {} lacks {name}", k + 1))?;
            *m = &*m + (*t - &*m) / (k + 1) as f64;
        }
    }
    Ok(mean)
}

/// Writes merged tensors as a policy checkpoint like the inputs'.
pub fn write(
    path: &Path,
    like: &Checkpoint,
    tensors: Vec<(String, Tensor)>,
    extra: serde_json::Value,
) -> Result<()> {
    let mut vs = VarStore::new(Device::Cpu);
    let _policy = Transformer::new(&vs.root(), &like.meta.config);
    let merged = Checkpoint::from_tensors(like.meta.clone(), tensors);
    merged.load_into(&mut vs)?;
    save(
        path,
        &vs,
        None,
        Stamp {
            kind: ModelKind::Policy,
            config: &like.meta.config,
            vocab_hash: &like.meta.vocab_hash,
            step: 0,
            version: 0,
            extra,
        },
    )
}
