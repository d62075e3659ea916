//! The policy: a pre-norm decoder-only transformer with learned positions, causal
//! attention through libtorch's scaled-dot-product attention and a KV cache for
//! incremental decoding. Parameter names follow PyTorch (`blocks.0.attn.qkv.weight`).

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::config::ModelConfig;

/// Keys and values of every layer for the tokens decoded so far, and which of those
/// key positions are real tokens (not left padding).
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    /// `[B, T_cached]` bool: key position holds a real token.
    key_valid: Option<Tensor>,
}

impl KvCache {
    pub fn new(n_layers: i64) -> KvCache {
        KvCache {
            layers: (0..n_layers).map(|_| None).collect(),
            key_valid: None,
        }
    }

    /// Tokens cached so far.
    pub fn len(&self) -> i64 {
        self.key_valid.as_ref().map_or(0, |k| k.size()[1])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the rows `rows` (`[B']` int64 indices, in their new order) and drops the
    /// others: a batch whose finished rows stop paying for their attention. Copies the
    /// filled positions only.
    pub fn retain_rows(&mut self, rows: &Tensor) {
        for c in self.layers.iter_mut().flatten() {
            c.k = c.k.narrow(2, 0, c.len).index_select(0, rows);
            c.v = c.v.narrow(2, 0, c.len).index_select(0, rows);
        }
        if let Some(k) = &self.key_valid {
            self.key_valid = Some(k.index_select(0, rows));
        }
    }
}

/// One layer's keys and values, `[B, H, capacity, d_head]`, of which the first `len`
/// positions are filled. The buffers grow by doubling, so a decoding step copies only its
/// own token's keys and values, not the whole cache (as concatenating would).
#[derive(Debug)]
struct LayerCache {
    k: Tensor,
    v: Tensor,
    len: i64,
}

impl LayerCache {
    /// Appends `k` and `v` (`[B, H, t, d_head]`) to `slot` and returns views of every
    /// cached position, the new ones included.
    fn append(slot: &mut Option<LayerCache>, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let t = k.size()[2];
        let mut c = match slot.take() {
            Some(c) if c.len + t <= c.k.size()[2] => c,
            old => {
                let len = old.as_ref().map_or(0, |c| c.len);
                let capacity = old.as_ref().map_or(0, |c| c.k.size()[2]);
                let mut shape = k.size();
                shape[2] = (2 * capacity).max(len + t + 64);
                let grown = |old: Option<&Tensor>| {
                    let buf = Tensor::empty(shape.as_slice(), (k.kind(), k.device()));
                    if let Some(old) = old {
                        buf.narrow(2, 0, len).copy_(&old.narrow(2, 0, len));
                    }
                    buf
                };
                LayerCache {
                    k: grown(old.as_ref().map(|c| &c.k)),
                    v: grown(old.as_ref().map(|c| &c.v)),
                    len,
                }
            }
        };
        c.k.narrow(2, c.len, t).copy_(k);
        c.v.narrow(2, c.len, t).copy_(v);
        c.len += t;
        let views = (c.k.narrow(2, 0, c.len), c.v.narrow(2, 0, c.len));
        *slot = Some(c);
        views
    }
}

#[derive(Debug)]
struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    n_heads: i64,
    dropout: f64,
}

impl Attention {
    fn new(p: nn::Path, c: &ModelConfig) -> Attention {
        Attention {
            qkv: nn::linear(&p / "qkv", c.d_model, 3 * c.d_model, Default::default()),
            proj: nn::linear(&p / "proj", c.d_model, c.d_model, Default::default()),
            n_heads: c.n_heads,
            dropout: c.dropout,
        }
    }

    /// `mask`: `[B, 1, T, T_keys]` bool, true where a query may attend to a key; `None`
    /// is plain causal attention (libtorch's fused kernel).
    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut Option<LayerCache>>,
        train: bool,
    ) -> Tensor {
        let (b, t, d) = x.size3().unwrap_or((0, 0, 0));
        let heads = |y: &Tensor| {
            y.view([b, t, self.n_heads, d / self.n_heads])
                .transpose(1, 2)
        };
        let qkv = x.apply(&self.qkv).split(d, -1);
        let (q, mut k, mut v) = (heads(&qkv[0]), heads(&qkv[1]), heads(&qkv[2]));
        if let Some(slot) = cache {
            (k, v) = LayerCache::append(slot, &k, &v);
        }
        let p = if train { self.dropout } else { 0.0 };
        let y =
            Tensor::scaled_dot_product_attention(&q, &k, &v, mask, p, mask.is_none(), None, false);
        y.transpose(1, 2)
            .contiguous()
            .view([b, t, d])
            .apply(&self.proj)
    }
}

#[derive(Debug)]
struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.apply(&self.fc1).gelu("none").apply(&self.fc2)
    }
}

#[derive(Debug)]
struct Block {
    ln1: nn::LayerNorm,
    attn: Attention,
    ln2: nn::LayerNorm,
    mlp: Mlp,
    dropout: f64,
}

impl Block {
    fn new(p: nn::Path, c: &ModelConfig) -> Block {
        Block {
            ln1: nn::layer_norm(&p / "ln1", vec![c.d_model], Default::default()),
            attn: Attention::new(&p / "attn", c),
            ln2: nn::layer_norm(&p / "ln2", vec![c.d_model], Default::default()),
            mlp: Mlp {
                fc1: nn::linear(&p / "mlp" / "fc1", c.d_model, c.d_ff, Default::default()),
                fc2: nn::linear(&p / "mlp" / "fc2", c.d_ff, c.d_model, Default::default()),
            },
            dropout: c.dropout,
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut Option<LayerCache>>,
        train: bool,
    ) -> Tensor {
        let x = x + self
            .attn
            .forward(&x.apply(&self.ln1), mask, cache, train)
            .dropout(self.dropout, train);
        &x + self
            .mlp
            .forward(&x.apply(&self.ln2))
            .dropout(self.dropout, train)
    }
}

/// Embeddings, transformer blocks and the final norm: the body shared by the policy
/// (causal) and the encoders of the embedder and the judge (bidirectional).
#[derive(Debug)]
pub struct Trunk {
    tok_emb: nn::Embedding,
    pos_emb: nn::Embedding,
    /// The task's structure features (`config.structure`), summed over a token's features
    /// and added to its embedding.
    struct_emb: Option<nn::Embedding>,
    blocks: Vec<Block>,
    ln_f: nn::LayerNorm,
    pub config: ModelConfig,
    device: tch::Device,
}

impl Trunk {
    /// Variables are created directly under `vs` (`tok_emb`, `blocks.0…`, `ln_f`).
    pub fn new(vs: &nn::Path, c: &ModelConfig) -> Trunk {
        Trunk {
            tok_emb: nn::embedding(vs / "tok_emb", c.vocab_size, c.d_model, Default::default()),
            pos_emb: nn::embedding(vs / "pos_emb", c.max_len, c.d_model, Default::default()),
            struct_emb: c
                .structure
                .as_ref()
                .map(|s| nn::embedding(vs / "struct_emb", s.ids, c.d_model, Default::default())),
            blocks: (0..c.n_layers)
                .map(|i| Block::new(vs / "blocks" / i, c))
                .collect(),
            ln_f: nn::layer_norm(vs / "ln_f", vec![c.d_model], Default::default()),
            config: c.clone(),
            device: vs.device(),
        }
    }

    pub fn device(&self) -> tch::Device {
        self.device
    }

    /// Hidden states `[B, T, D]` for `tokens` `[B, T]`; `valid` `[B, T]` marks real
    /// tokens; `features` `[B, T, K]` are the task's structure ids of each position
    /// (`crate::structure`), which a policy with a structure embedding needs and any other
    /// model ignores. Positions count real tokens only, so a row's positions do not depend on its
    /// padding. `causal` restricts each token to the ones before it. With a cache,
    /// `tokens` continue the cached sequence and their keys and values are appended, and
    /// rows may be left-padded (as sampling pads prompts). Without a cache, causal rows
    /// must be right-padded (as training batches are): attention then runs libtorch's
    /// fused causal kernel, and padding after a token never reaches it.
    pub fn forward(
        &self,
        tokens: &Tensor,
        valid: &Tensor,
        features: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        causal: bool,
        train: bool,
    ) -> Tensor {
        let (_, t) = tokens.size2().unwrap_or((0, 0));
        let past_valid = cache
            .as_ref()
            .and_then(|c| c.key_valid.as_ref().map(|k| k.shallow_clone()));
        let all_valid = match &past_valid {
            Some(p) => Tensor::cat(&[p, valid], 1),
            None => valid.shallow_clone(),
        };
        let t_all = all_valid.size()[1];
        // Position of each new token: real tokens before it (itself excluded).
        let counts = all_valid.to_kind(Kind::Int64).cumsum(1, Kind::Int64);
        let positions = (counts.narrow(1, t_all - t, t) - 1)
            .clamp_min(0)
            .clamp_max(self.config.max_len - 1);
        let fused_causal = causal && cache.is_none();
        // Real keys only (causal: and not after the query); each query sees at least itself.
        let device = tokens.device();
        let q_idx = Tensor::arange_start(t_all - t, t_all, (Kind::Int64, device)).view([t, 1]);
        let k_idx = Tensor::arange(t_all, (Kind::Int64, device)).view([1, t_all]);
        let diagonal = k_idx.eq_tensor(&q_idx).unsqueeze(0);
        let keys = all_valid.unsqueeze(1);
        let allowed = if causal {
            k_idx.le_tensor(&q_idx).unsqueeze(0).logical_and(&keys)
        } else {
            keys
        };
        let mask = (!fused_causal).then(|| allowed.logical_or(&diagonal).unsqueeze(1));
        let mut x = tokens.apply(&self.tok_emb) + positions.apply(&self.pos_emb);
        if let Some(emb) = &self.struct_emb {
            let f = features.expect("a policy with a structure embedding runs with its features");
            x += f.apply(emb).sum_dim_intlist(2, false, Kind::Float);
        }
        x = x.dropout(self.config.dropout, train);
        match cache {
            Some(c) => {
                for (block, slot) in self.blocks.iter().zip(c.layers.iter_mut()) {
                    x = block.forward(&x, mask.as_ref(), Some(slot), train);
                }
                c.key_valid = Some(all_valid);
            }
            None => {
                for block in &self.blocks {
                    x = block.forward(&x, mask.as_ref(), None, train);
                }
            }
        }
        x.apply(&self.ln_f)
    }
}

/// The policy: a causal trunk and a language-model head.
#[derive(Debug)]
pub struct Transformer {
    trunk: Trunk,
    head: nn::Linear,
    pub config: ModelConfig,
}

impl Transformer {
    pub fn new(vs: &nn::Path, c: &ModelConfig) -> Transformer {
        Transformer {
            trunk: Trunk::new(vs, c),
            head: nn::linear(vs / "head", c.d_model, c.vocab_size, Default::default()),
            config: c.clone(),
        }
    }

    pub fn device(&self) -> tch::Device {
        self.trunk.device()
    }

    /// Logits `[B, T, V]` (see [`Trunk::forward`]; attention is causal).
    pub fn forward(
        &self,
        tokens: &Tensor,
        valid: &Tensor,
        features: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Tensor {
        self.trunk
            .forward(tokens, valid, features, cache, true, train)
            .apply(&self.head)
    }
}

impl Trunk {
    /// Mean of the hidden states of each sequence (bidirectional attention), `[B, D]`.
    /// Sequences longer than `max_len` are cut.
    pub fn pooled(&self, seqs: &[&[u32]], train: bool) -> Tensor {
        let max = self.config.max_len as usize;
        let t = seqs
            .iter()
            .map(|s| s.len().min(max))
            .max()
            .unwrap_or(1)
            .max(1);
        let mut ids = vec![0i64; seqs.len() * t];
        let mut valid = vec![false; seqs.len() * t];
        for (i, s) in seqs.iter().enumerate() {
            for (j, &x) in s.iter().take(t).enumerate() {
                ids[i * t + j] = i64::from(x);
                valid[i * t + j] = true;
            }
        }
        let shape = [seqs.len() as i64, t as i64];
        let ids = Tensor::from_slice(&ids).view(shape).to(self.device);
        let valid = Tensor::from_slice(&valid).view(shape).to(self.device);
        let h = self.forward(&ids, &valid, None, None, false, train);
        let w = valid.to_kind(Kind::Float).unsqueeze(2);
        (h * &w).sum_dim_intlist(1, false, Kind::Float)
            / w.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
    }
}
