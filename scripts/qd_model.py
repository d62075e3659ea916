"""A qd policy in plain PyTorch: the model `qd export` ships, and the one qd's PyTorch
references (reference_generate.py, reference_learner.py) run.

    import torch, qd_model
    model = qd_model.load("exported/")            # a `qd export` folder, or a qd checkpoint
    ids = torch.tensor([[5, 17, 1, 40, 41]])      # [prompt] <sep> [tune]: see vocab.json
    logits, _ = model(ids, torch.ones_like(ids, dtype=torch.bool), None, features)

`forward(tokens, valid, cache, features)` takes `[B, T]` ids, a `[B, T]` mask of real
tokens (left or right padding) and, for a policy whose config names a `structure`, the
task's `[B, T, K]` structure ids of each position (the folk task's metrical position:
`folk_metrical.py`, shipped beside this file); it returns the next-id logits
`[B, T, vocab]` and a KV cache to continue from. It needs torch only (the checkpoint
reader is included).
"""

import json
import os
import struct

import torch
import torch.nn.functional as F
from torch import nn


def load_checkpoint(path):
    """(metadata, tensors) of a qd checkpoint: the `qd` metadata of its safetensors header
    (the model's `config` among it) and its float32 model tensors (optimizer state
    skipped)."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header.pop("__metadata__")["qd"])
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if name.startswith("optimizer."):
            continue
        start, end = info["data_offsets"]
        assert info["dtype"] == "F32", name
        buf = bytearray(data[base + start : base + end])
        tensors[name] = torch.frombuffer(buf, dtype=torch.float32).reshape(info["shape"])
    return meta, tensors


class Block(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d, 3 * d)
        self.attn.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(d, ff)
        self.mlp.fc2 = nn.Linear(ff, d)

    def forward(self, x, mask, cache):
        b, t, d = x.shape
        q, k, v = self.attn.qkv(self.ln1(x)).split(d, -1)
        q, k, v = (y.view(b, t, self.heads, d // self.heads).transpose(1, 2) for y in (q, k, v))
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.attn.proj(y.transpose(1, 2).reshape(b, t, d))
        x = x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.ln2(x))))
        return x, (k, v)


class Policy(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.tok_emb = nn.Embedding(c["vocab_size"], d)
        self.pos_emb = nn.Embedding(c["max_len"], d)
        structure = c.get("structure")
        self.struct_emb = nn.Embedding(structure["ids"], d) if structure else None
        self.blocks = nn.ModuleList(Block(d, c["n_heads"], c["d_ff"]) for _ in range(c["n_layers"]))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, c["vocab_size"])
        self.max_len = c["max_len"]

    def forward(self, tokens, valid, cache, features=None):
        """Logits for tokens continuing the cached ones; returns the new cache."""
        t = tokens.shape[1]
        all_valid = valid if cache is None else torch.cat([cache["valid"], valid], 1)
        t_all = all_valid.shape[1]
        positions = (all_valid.long().cumsum(1)[:, t_all - t :] - 1).clamp(0, self.max_len - 1)
        q_idx = torch.arange(t_all - t, t_all, device=tokens.device).view(t, 1)
        k_idx = torch.arange(t_all, device=tokens.device).view(1, t_all)
        mask = ((k_idx <= q_idx).unsqueeze(0) & all_valid.unsqueeze(1)) | (k_idx == q_idx).unsqueeze(0)
        mask = mask.unsqueeze(1)
        x = self.tok_emb(tokens) + self.pos_emb(positions)
        if self.struct_emb is not None:
            if features is None:
                raise ValueError("this policy embeds its task's structure: pass its features")
            x = x + self.struct_emb(features).sum(2)
        layers = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, None if cache is None else cache["layers"][i])
            layers.append(kv)
        return self.head(self.ln_f(x)), {"layers": layers, "valid": all_valid}


def load(path):
    """The policy of a `qd export` folder (its model.safetensors) or of a qd checkpoint
    file, in eval mode."""
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    meta, tensors = load_checkpoint(path)
    model = Policy(meta["config"])
    model.load_state_dict(tensors, strict=True)
    return model.eval()
