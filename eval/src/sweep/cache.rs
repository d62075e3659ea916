//! The point cache: every point's report is written to `out/points/<family>-<param>.json`
//! under a key that hashes the evaluation context, the policy's weights and the sampling;
//! [`Evaluator`] evaluates a point or takes its report from the cache.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use model::checkpoint::{Checkpoint, CheckpointMeta};
use model::config::ModelConfig;
use model::fsutil::write_atomic;
use model::merge;
use model::sampling::SamplingConfig;
use model::task::{Embedder, Judge, Task};
use model::train::progress_bar;
use model::transformer::Transformer;

use crate::evaluate::{evaluate, EvalConfig, EvalReport};

use super::{Family, Point, Row, SweepConfig};

/// Bumped when what a cached report means changes.
const CACHE_FORMAT: u32 = 4;

/// A cached point (`out/points/<family>-<param>.json`).
#[derive(Debug, Serialize, Deserialize)]
struct PointFile {
    family: Family,
    param: f64,
    #[serde(default)]
    seed: Option<u64>,
    key: String,
    model: String,
    /// How the policy was sampled.
    sampling: serde_json::Value,
    report: EvalReport,
}

/// The weights of an operating point: a checkpoint's, or merged ones.
pub(super) enum Weights<'a> {
    Checkpoint(&'a Checkpoint),
    Lerp(&'a Checkpoint, &'a Checkpoint, f64),
    Average(Vec<&'a Checkpoint>),
}

impl Weights<'_> {
    fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        match self {
            Weights::Checkpoint(ck) => Ok(ck
                .tensors()
                .map(|(n, t)| (n.to_string(), t.shallow_clone()))
                .collect()),
            Weights::Lerp(a, b, l) => merge::lerp(a, b, *l),
            Weights::Average(cks) => merge::average(cks),
        }
    }

    /// The metadata (architecture, vocabulary) the weights share.
    fn meta(&self) -> Result<&CheckpointMeta> {
        match self {
            Weights::Checkpoint(ck) | Weights::Lerp(ck, _, _) => Ok(&ck.meta),
            Weights::Average(cks) => cks.first().map(|c| &c.meta).context("nothing to average"),
        }
    }
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of a policy's architecture and named tensors (in name order): equal for
/// bit-identical weights whatever file or merge they come from.
pub fn weights_fingerprint(config: &ModelConfig, tensors: &[(String, Tensor)]) -> Result<String> {
    let mut named: Vec<&(String, Tensor)> = tensors.iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(config)?);
    for (name, t) in named {
        let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let n = t.numel();
        let mut bytes = vec![0u8; n * 4];
        t.f_copy_data_u8(&mut bytes, n)?;
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((n as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex(h.finalize()))
}

/// The sampling settings as the cache records and keys them.
fn sampling_json(s: &SamplingConfig) -> serde_json::Value {
    serde_json::json!({
        "temperature": s.temperature,
        "top_k": s.top_k,
        "cfg_gamma": s.cfg_gamma,
        "cfg_plausibility": s.cfg_plausibility,
        "cfg_scope": s.cfg_scope,
        "max_new_tokens": s.max_new_tokens,
    })
}

/// The key of one point: its evaluation context, weights and sampling.
fn point_key(context: &str, weights: &str, s: &SamplingConfig) -> String {
    let mut h = Sha256::new();
    h.update(context.as_bytes());
    h.update(weights.as_bytes());
    h.update(sampling_json(s).to_string().as_bytes());
    hex(h.finalize())
}

/// Everything a point's evaluation needs.
pub(super) struct Evaluator<'a> {
    cfg: &'a SweepConfig,
    task: &'a dyn Task,
    embedder: &'a dyn Embedder,
    judge: &'a dyn Judge,
    context: String,
    known: HashMap<String, EvalReport>,
    rows: Vec<Row>,
    evaluated: usize,
    cached: usize,
    bar: Option<indicatif::ProgressBar>,
}

impl<'a> Evaluator<'a> {
    /// An evaluator that knows every point cached in `cfg.out/points`, with a progress bar
    /// of `total` points when `cfg.progress`.
    pub(super) fn new(
        cfg: &'a SweepConfig,
        task: &'a dyn Task,
        embedder: &'a dyn Embedder,
        judge: &'a dyn Judge,
        total: u64,
    ) -> Result<Self> {
        Ok(Evaluator {
            cfg,
            task,
            embedder,
            judge,
            context: context_key(cfg, task)?,
            known: cached_reports(&cfg.out.join("points")),
            rows: Vec::new(),
            evaluated: 0,
            cached: 0,
            bar: progress_bar(cfg.progress, total, 0),
        })
    }

    /// The points so far, in the order they came.
    pub(super) fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Clears the progress bar; the points, and how many were evaluated and cached.
    pub(super) fn finish(self) -> (Vec<Row>, usize, usize) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        (self.rows, self.evaluated, self.cached)
    }

    fn log(&self, line: String) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Evaluates one point, or takes its report from the cache.
    pub(super) fn point(
        &mut self,
        point: Point,
        model: String,
        weights: Weights<'_>,
        sampling: SamplingConfig,
    ) -> Result<()> {
        let Point {
            family,
            param,
            seed,
        } = point;
        let mut label = format!("{} {}", family.name(), family.param_text(param));
        if let Some(s) = seed {
            label.push_str(&format!(" seed {s}"));
        }
        if let Some(b) = &self.bar {
            b.set_message(label.clone());
        }
        let tensors = weights.tensors()?;
        let meta = weights.meta()?;
        let key = point_key(
            &self.context,
            &weights_fingerprint(&meta.config, &tensors)?,
            &sampling,
        );
        let (report, how) = match self.known.get(&key) {
            Some(r) => {
                self.cached += 1;
                (r.clone(), "cached".to_string())
            }
            None => {
                let t0 = Instant::now();
                model::structure::check(&meta.config, self.task.vocabulary().structure.as_deref())
                    .map_err(anyhow::Error::msg)?;
                let mut vs = VarStore::new(self.cfg.device);
                let policy = Transformer::new(&vs.root(), &meta.config);
                Checkpoint::from_tensors(meta.clone(), tensors).load_into(&mut vs)?;
                let eval = EvalConfig {
                    split: self.cfg.split,
                    k: self.cfg.samples,
                    prompts: Some(self.cfg.prompts),
                    batch: self.cfg.batch,
                    sampling: sampling.clone(),
                    seed: self.cfg.seed,
                    // The sweep's own bar counts the points.
                    progress: false,
                };
                let r = evaluate(&policy, self.task, self.embedder, self.judge, &eval)?;
                self.evaluated += 1;
                self.known.insert(key.clone(), r.clone());
                (
                    r,
                    format!("evaluated in {:.1} s", t0.elapsed().as_secs_f64()),
                )
            }
        };
        self.log(format!(
            "{label:<28} quality {:.4}  embedding diversity {:.4}  edit diversity {:.4}  ({how})",
            report.quality, report.embed_diversity, report.edit_diversity
        ));
        let file = PointFile {
            family,
            param,
            seed,
            key,
            model,
            sampling: sampling_json(&sampling),
            report: report.clone(),
        };
        write_atomic(
            &self.cfg.out.join("points").join(point.file_name()),
            serde_json::to_string_pretty(&file)?.as_bytes(),
        )?;
        self.rows.push(Row {
            family,
            param,
            seed,
            report,
        });
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        Ok(())
    }
}

/// Reports of every readable point file, by key.
fn cached_reports(dir: &Path) -> HashMap<String, EvalReport> {
    let mut known = HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<PointFile>(&b)?))
        {
            Ok(p) => {
                known.insert(p.key, p.report);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable cached point: {e}")
            }
        }
    }
    known
}

/// Hashes what every point of this sweep shares.
fn context_key(cfg: &SweepConfig, task: &dyn Task) -> Result<String> {
    let context = serde_json::json!({
        "format": CACHE_FORMAT,
        "task": task.name(),
        "task_fingerprint": task.fingerprint()?,
        "split": cfg.split,
        "prompts": cfg.prompts,
        "prompt_sample": "stratified",
        "samples": cfg.samples,
        "seed": cfg.seed,
        "batch": cfg.batch,
        "max_new_tokens": cfg.max_new_tokens,
        "device": format!("{:?}", cfg.device),
    });
    Ok(hex(Sha256::digest(context.to_string().as_bytes())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn fingerprints_follow_the_weights_not_their_order_or_source() {
        tch::manual_seed(0);
        let c = model::config::Preset::Tiny.config(40);
        let a = vec![
            (
                "x".to_string(),
                Tensor::randn([3, 2], (Kind::Float, Device::Cpu)),
            ),
            (
                "y".to_string(),
                Tensor::randn([4], (Kind::Float, Device::Cpu)),
            ),
        ];
        let reversed: Vec<(String, Tensor)> =
            a.iter().rev().map(|(n, t)| (n.clone(), t.copy())).collect();
        let fa = weights_fingerprint(&c, &a).unwrap();
        assert_eq!(fa, weights_fingerprint(&c, &reversed).unwrap());
        let changed: Vec<(String, Tensor)> = a.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        let _ = changed[1].1.get(2).fill_(7.0);
        assert_ne!(fa, weights_fingerprint(&c, &changed).unwrap());
        let mut other = c.clone();
        other.d_ff += 1;
        assert_ne!(fa, weights_fingerprint(&other, &a).unwrap());
        // The key also covers the sampling.
        let s = SamplingConfig::default();
        let g = SamplingConfig {
            cfg_gamma: Some(3.0),
            ..SamplingConfig::default()
        };
        assert_eq!(point_key("c", &fa, &s), point_key("c", &fa, &s));
        assert_ne!(point_key("c", &fa, &s), point_key("c", &fa, &g));
        assert_ne!(point_key("c", &fa, &s), point_key("d", &fa, &s));
        let content = SamplingConfig {
            cfg_scope: model::sampling::CfgScope::Content,
            ..g.clone()
        };
        assert_ne!(point_key("c", &fa, &g), point_key("c", &fa, &content));
    }
}
