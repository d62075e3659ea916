//! The policy's architecture: a serde config with size presets.

use serde::{Deserialize, Serialize};

use crate::fnv::Fnv;
use crate::structure::StructureSpec;

/// Size presets: `tiny` for tests (trains in seconds), `small` for CPU, `base` for GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Tiny,
    Small,
    Base,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Preset, String> {
        match s {
            "tiny" => Ok(Preset::Tiny),
            "small" => Ok(Preset::Small),
            "base" => Ok(Preset::Base),
            _ => Err(format!(
                "unknown model preset {s:?} (expected tiny, small or base)"
            )),
        }
    }
}

/// A decoder-only transformer's shape. Two checkpoints are compatible when their configs
/// are equal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub vocab_size: i64,
    pub d_model: i64,
    pub n_layers: i64,
    pub n_heads: i64,
    pub d_ff: i64,
    /// Longest sequence (prompt, `<sep>`, tune, `<eos>`) the learned positions cover.
    pub max_len: i64,
    pub dropout: f64,
    /// The task's structure features the policy embeds beside each token (`None`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<StructureSpec>,
}

impl Preset {
    pub fn config(self, vocab_size: usize) -> ModelConfig {
        let (d_model, n_layers, n_heads, max_len) = match self {
            Preset::Tiny => (32, 2, 2, 320),
            Preset::Small => (128, 4, 4, 512),
            Preset::Base => (384, 8, 6, 1100),
        };
        ModelConfig {
            vocab_size: vocab_size as i64,
            d_model,
            n_layers,
            n_heads,
            d_ff: 4 * d_model,
            max_len,
            dropout: if self == Preset::Tiny { 0.0 } else { 0.1 },
            structure: None,
        }
    }
}

/// The largest size of any dimension of a model.
pub const MAX_DIMENSION: i64 = 1 << 20;

impl ModelConfig {
    /// Checks the shape is buildable; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("d_ff", self.d_ff),
            ("max_len", self.max_len),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(format!("model.{name} must be positive, got {v}"));
        }
        // Far beyond any model of this task, short of shapes whose allocation alone
        // would exhaust memory.
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v > MAX_DIMENSION) {
            return Err(format!(
                "model.{name} is {v}, more than the {MAX_DIMENSION} qd accepts"
            ));
        }
        if self.d_model % self.n_heads != 0 {
            return Err(format!(
                "model.d_model ({}) must be a multiple of model.n_heads ({})",
                self.d_model, self.n_heads
            ));
        }
        if let Some(s) = &self.structure {
            if s.per_token < 1 || s.ids < 1 {
                return Err(format!(
                    "model.structure needs at least one feature and one id, got {} and {}",
                    s.per_token, s.ids
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "model.dropout must be in [0, 1), got {}",
                self.dropout
            ));
        }
        Ok(())
    }

    /// The number of parameters of a [`crate::transformer::Transformer`] of this shape.
    pub fn parameters(&self) -> u64 {
        let (v, d, l, ff) = (
            self.vocab_size as u64,
            self.d_model as u64,
            self.max_len as u64,
            self.d_ff as u64,
        );
        let block = (d * 3 * d + 3 * d) + (d * d + d) + 4 * d + (d * ff + ff) + (ff * d + d);
        let structure = self.structure.as_ref().map_or(0, |s| s.ids as u64 * d);
        v * d + l * d + structure + self.n_layers as u64 * block + 2 * d + (d * v + v)
    }

    /// The most bytes a published version of this shape (its checkpoint without the
    /// optimizer's state) can take: the parameters as float32 and 1 MiB for the header.
    /// What a client reserves for a version at most, whatever size the learner announces.
    pub fn max_blob_bytes(&self) -> u64 {
        self.parameters().saturating_mul(4).saturating_add(1 << 20)
    }

    /// A stable hash of the architecture (what actors and the learner compare).
    pub fn hash(&self) -> String {
        let mut h = Fnv::default();
        h.write(serde_json::to_string(self).unwrap_or_default().as_bytes());
        format!("{:016x}", h.finish())
    }

    /// The fields that differ from `other`, as `name: ours vs theirs`.
    pub fn diff(&self, other: &ModelConfig) -> Vec<String> {
        let a = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(other).unwrap_or_default();
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return vec![];
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}: {v} vs {}",
                    b.get(k).map_or("missing".to_string(), |x| x.to_string())
                )
            })
            .collect()
    }
}
