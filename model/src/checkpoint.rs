//! Checkpoints: one safetensors file with PyTorch-style tensor names (loadable by Python
//! `safetensors`), the optimizer's moments under `optimizer.`, and JSON metadata in the
//! header (architecture, vocabulary hash, step, version, a CRC32 of every tensor).
//! Writes are atomic; a truncated, corrupted or mismatched file is refused, never
//! half-loaded.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::fsutil::write_atomic;
use crate::optim::AdamW;
use crate::task::Task;

const FORMAT: u32 = 2;

/// The previous format, still read: its checksum covers the tensors only.
const FORMAT_TENSORS_ONLY: u32 = 1;
const OPTIMIZER_PREFIX: &str = "optimizer.";

/// Why a checkpoint was refused: a caller may skip a corrupt file (and take an older
/// one) but must stop on one that belongs to another model.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read at all (missing, no permission).
    #[error("reading checkpoint {path}: {io}{}", missing_hint(io))]
    Unreadable { path: String, io: std::io::Error },
    /// The bytes are not a whole, verified qd checkpoint (truncated, damaged, another
    /// format).
    #[error("{what} is not a valid qd checkpoint: {why}")]
    Corrupt { what: String, why: String },
    /// A valid checkpoint of another kind of model (a judge where a policy is wanted).
    #[error("{what} holds a {found:?} model, not a {expected:?} model")]
    WrongKind {
        what: String,
        found: ModelKind,
        expected: ModelKind,
    },
    /// A valid checkpoint of another architecture or vocabulary.
    #[error("{what}: {why}")]
    Incompatible { what: String, why: String },
}

impl CheckpointError {
    /// Whether the file itself is at fault (unreadable or damaged) rather than the model
    /// it holds.
    pub fn is_damaged(&self) -> bool {
        matches!(
            self,
            CheckpointError::Unreadable { .. } | CheckpointError::Corrupt { .. }
        )
    }
}

/// For a checkpoint that is not there: the commands that write one.
fn missing_hint(io: &std::io::Error) -> &'static str {
    if io.kind() == std::io::ErrorKind::NotFound {
        " (`qd pretrain` writes the base policy, runs/pretrain/last.safetensors; `qd embedder \
         train` and `qd judge train` the embedder and the judge; `qd run` or `qd learner` a \
         student, <run_dir>/student.safetensors; `qd merge` a merge; `make demo` all of them)"
    } else {
        ""
    }
}

/// What a checkpoint holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Policy,
    Embedder,
    Judge,
}

/// What a checkpoint says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMeta {
    pub format: u32,
    pub kind: ModelKind,
    pub config: ModelConfig,
    pub vocab_hash: String,
    /// Training steps taken.
    pub step: u64,
    /// Policy version (the learner's publication counter).
    pub version: u64,
    /// The optimizer's step, when its moments are saved.
    pub optimizer_step: Option<i64>,
    /// CRC32 over names and bytes of every tensor, in name order, then over this
    /// metadata as JSON with `checksum` empty (format 1: the tensors only).
    pub checksum: String,
    /// Anything else the writer needs to resume (schedule, RNG state, …).
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// A checkpoint read from disk and verified.
#[derive(Debug)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    tensors: Vec<(String, Tensor)>,
}

fn to_bytes(t: &Tensor) -> Vec<u8> {
    let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let n = t.numel();
    let mut data = vec![0u8; n * 4];
    t.copy_data_u8(&mut data, n);
    data
}

/// The checksum of tensors `items` (in name order) and, from format 2, of `meta`.
fn checksum<'a>(
    items: impl Iterator<Item = (&'a str, &'a [u8])>,
    meta: &CheckpointMeta,
) -> Result<String, serde_json::Error> {
    let mut h = crc32fast::Hasher::new();
    for (name, data) in items {
        h.update(name.as_bytes());
        h.update(data);
    }
    if meta.format != FORMAT_TENSORS_ONLY {
        let unsummed = CheckpointMeta {
            checksum: String::new(),
            ..meta.clone()
        };
        h.update(serde_json::to_string(&unsummed)?.as_bytes());
    }
    Ok(format!("{:08x}", h.finalize()))
}

/// What the writer of a checkpoint records about it.
#[derive(Clone, Debug)]
pub struct Stamp<'a> {
    pub kind: ModelKind,
    pub config: &'a ModelConfig,
    pub vocab_hash: &'a str,
    pub step: u64,
    pub version: u64,
    pub extra: serde_json::Value,
}

impl<'a> Stamp<'a> {
    /// The stamp of a model trained offline (pre-training, the embedder, the judge): no
    /// policy version.
    pub fn offline(
        kind: ModelKind,
        config: &'a ModelConfig,
        vocab_hash: &'a str,
        step: u64,
        extra: serde_json::Value,
    ) -> Stamp<'a> {
        Stamp {
            kind,
            config,
            vocab_hash,
            step,
            version: 0,
            extra,
        }
    }
}

/// Writes the model's variables (and the optimizer's moments) atomically to `path`.
pub fn save(path: &Path, vs: &VarStore, optimizer: Option<&AdamW>, stamp: Stamp<'_>) -> Result<()> {
    write_atomic(path, &serialize(vs, optimizer, stamp)?)
}

/// The bytes of a checkpoint file: what [`save`] writes and the learner publishes.
pub fn serialize(vs: &VarStore, optimizer: Option<&AdamW>, stamp: Stamp<'_>) -> Result<Vec<u8>> {
    let mut named: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    for (name, t) in vs.variables() {
        named.push((
            name,
            to_bytes(&t),
            t.size().iter().map(|&d| d as usize).collect(),
        ));
    }
    if let Some(opt) = optimizer {
        for (name, t) in opt.state() {
            named.push((
                format!("{OPTIMIZER_PREFIX}{name}"),
                to_bytes(&t),
                t.size().iter().map(|&d| d as usize).collect(),
            ));
        }
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut meta = CheckpointMeta {
        format: FORMAT,
        kind: stamp.kind,
        config: stamp.config.clone(),
        vocab_hash: stamp.vocab_hash.to_string(),
        step: stamp.step,
        version: stamp.version,
        optimizer_step: optimizer.map(|o| o.step),
        checksum: String::new(),
        extra: stamp.extra,
    };
    meta.checksum = checksum(
        named.iter().map(|(n, d, _)| (n.as_str(), d.as_slice())),
        &meta,
    )?;
    let views = named
        .iter()
        .map(|(n, d, shape)| Ok((n.as_str(), TensorView::new(Dtype::F32, shape.clone(), d)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let header = HashMap::from([("qd".to_string(), serde_json::to_string(&meta)?)]);
    safetensors::tensor::serialize(views, &Some(header)).map_err(|e| anyhow::anyhow!("{e:?}"))
}

impl Checkpoint {
    /// Reads and verifies a checkpoint (structure, metadata, checksum).
    pub fn read(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|io| CheckpointError::Unreadable {
            path: path.display().to_string(),
            io,
        })?;
        Checkpoint::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses and verifies checkpoint bytes; `what` names them in errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Checkpoint, CheckpointError> {
        let bad = |why: String| CheckpointError::Corrupt {
            what: what.to_string(),
            why,
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("{e:?}")))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("{e:?}")))?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("qd"))
            .ok_or_else(|| bad("no qd metadata".into()))?;
        let meta: CheckpointMeta =
            serde_json::from_str(json).map_err(|e| bad(format!("metadata: {e}")))?;
        if meta.format != FORMAT && meta.format != FORMAT_TENSORS_ONLY {
            return Err(bad(format!(
                "format {} (this qd reads {FORMAT_TENSORS_ONLY} and {FORMAT})",
                meta.format
            )));
        }
        let mut views = st.tensors();
        views.sort_by(|a, b| a.0.cmp(&b.0));
        let sum = checksum(views.iter().map(|(n, v)| (n.as_str(), v.data())), &meta)
            .map_err(|e| bad(format!("metadata: {e}")))?;
        if sum != meta.checksum {
            return Err(bad(format!(
                "checksum {sum} does not match the recorded {}",
                meta.checksum
            )));
        }
        // A config that would build nothing, or divide by zero, is refused before any
        // model is built from it.
        meta.config
            .validate()
            .map_err(|e| bad(format!("metadata: {e}")))?;
        let mut tensors = Vec::with_capacity(views.len());
        for (name, v) in views {
            if v.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor {name} is {:?}, expected F32",
                    v.dtype()
                )));
            }
            let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
            let t = Tensor::f_from_data_size(v.data(), &shape, Kind::Float)
                .map_err(|e| bad(format!("tensor {name}: {e}")))?;
            tensors.push((name, t));
        }
        Ok(Checkpoint { meta, tensors })
    }

    /// Reads a checkpoint, refusing one of another kind or trained on another vocabulary.
    pub fn read_for(
        path: &Path,
        kind: ModelKind,
        vocab_hash: &str,
    ) -> Result<Checkpoint, CheckpointError> {
        let ck = Checkpoint::read(path)?;
        let what = path.display().to_string();
        if ck.meta.kind != kind {
            return Err(CheckpointError::WrongKind {
                what,
                found: ck.meta.kind,
                expected: kind,
            });
        }
        if ck.meta.vocab_hash != vocab_hash {
            return Err(CheckpointError::Incompatible {
                what,
                why: format!(
                    "trained with vocabulary {}, the task has {vocab_hash}: use the data it was trained on",
                    ck.meta.vocab_hash
                ),
            });
        }
        Ok(ck)
    }

    /// Refuses a checkpoint of another architecture or vocabulary, saying what differs.
    pub fn check_compatible(
        &self,
        config: &ModelConfig,
        vocab_hash: &str,
    ) -> Result<(), CheckpointError> {
        let incompatible = |why: String| CheckpointError::Incompatible {
            what: "checkpoint".into(),
            why,
        };
        let diff = self.meta.config.diff(config);
        if !diff.is_empty() {
            return Err(incompatible(format!(
                "architecture differs from the model's: {} (checkpoint vs model)",
                diff.join(", ")
            )));
        }
        if self.meta.vocab_hash != vocab_hash {
            return Err(incompatible(format!(
                "vocabulary {} differs from the task's {vocab_hash}: prepare the data as the checkpoint was trained, or retrain",
                self.meta.vocab_hash
            )));
        }
        Ok(())
    }

    /// Copies the model tensors into `vs`; every variable must be present with its shape,
    /// and nothing is changed unless all are.
    pub fn load_into(&self, vs: &mut VarStore) -> Result<(), CheckpointError> {
        let incompatible = |why: String| CheckpointError::Incompatible {
            what: "checkpoint".into(),
            why,
        };
        let vars = vs.variables();
        let mut pairs = Vec::with_capacity(vars.len());
        for (name, var) in &vars {
            let (_, t) = self
                .tensors
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| incompatible(format!("lacks tensor {name}")))?;
            if t.size() != var.size() {
                return Err(incompatible(format!(
                    "tensor {name} has shape {:?}, the model {:?}",
                    t.size(),
                    var.size()
                )));
            }
            pairs.push((var, t));
        }
        let extra: Vec<&str> = self
            .tensors
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !n.starts_with(OPTIMIZER_PREFIX) && !vars.contains_key(*n))
            .collect();
        if !extra.is_empty() {
            return Err(incompatible(format!(
                "has tensors the model lacks: {}",
                extra.join(", ")
            )));
        }
        tch::no_grad(|| {
            for (var, t) in pairs {
                let mut var = var.shallow_clone();
                var.copy_(t);
            }
        });
        Ok(())
    }

    /// The optimizer's saved moments and step, if any.
    pub fn optimizer_state(&self) -> Option<(i64, Vec<(String, Tensor)>)> {
        let step = self.meta.optimizer_step?;
        let state = self
            .tensors
            .iter()
            .filter_map(|(n, t)| {
                n.strip_prefix(OPTIMIZER_PREFIX)
                    .map(|k| (k.to_string(), t.shallow_clone()))
            })
            .collect();
        Some((step, state))
    }

    /// A checkpoint held in memory (merged weights), described by `meta`.
    pub fn from_tensors(meta: CheckpointMeta, tensors: Vec<(String, Tensor)>) -> Checkpoint {
        Checkpoint { meta, tensors }
    }

    /// Named model tensors (for merging and publishing).
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors
            .iter()
            .filter(|(n, _)| !n.starts_with(OPTIMIZER_PREFIX))
            .map(|(n, t)| (n.as_str(), t))
    }
}

/// The numbered checkpoints in `dir` (`step-<n>.safetensors`, as the learner writes them),
/// by step, oldest first; none when `dir` does not exist.
pub fn numbered(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut found: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Reads a policy checkpoint for `task`: trained on its vocabulary, and embedding no
/// structure but the one the task reads (`crate::structure`).
pub fn read_policy(path: &Path, task: &dyn Task) -> Result<Checkpoint, CheckpointError> {
    let ck = Checkpoint::read_for(path, ModelKind::Policy, &task.vocab_hash())?;
    crate::structure::check(&ck.meta.config, task.vocabulary().structure.as_deref()).map_err(
        |why| CheckpointError::Incompatible {
            what: path.display().to_string(),
            why,
        },
    )?;
    Ok(ck)
}

/// Loads a policy checkpoint for `task` ([`read_policy`]).
pub fn load_policy(
    path: &Path,
    task: &dyn Task,
    device: Device,
) -> Result<(VarStore, crate::transformer::Transformer, Checkpoint), CheckpointError> {
    let ck = read_policy(path, task)?;
    let mut vs = VarStore::new(device);
    let model = crate::transformer::Transformer::new(&vs.root(), &ck.meta.config);
    ck.load_into(&mut vs)?;
    Ok((vs, model, ck))
}
