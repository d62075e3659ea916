"""PyTorch-eager reference for `qd bench generate`.

Loads a qd policy checkpoint (safetensors, PyTorch-style names) into the same
architecture written in plain PyTorch and samples with a KV cache on the given prompts
(left-padded, `<sep>`-terminated, exactly --new-tokens steps, optionally with CFG).

It answers one command per line on standard input (reference_learner.serve), so that
qd can interleave its own repetitions with the reference's, each answered with one JSON
line on standard output (the first line, before any command, names the torch build and
its threads):

- `plain` or `cfg`: one timed generation, `{"seconds": s}`;
- `plain_real` or `cfg_real`: the same for the request's `real_steps` (the length of
  the longest row qd sampled with `<eos>` allowed): an eager sampler decodes the whole
  batch until its last row finishes;
- `score`: so that qd can check both implementations agree, the log-probability vector
  over the allowed ids at every step of every row when fed the tokens qd sampled (the
  request's `follow`, per mode), through the same KV-cache decoding:
  `{"logprobs": {"plain": ..., "cfg": ...}}`.
"""

import argparse
import json

import torch

from qd_model import load
from reference_learner import serve, structure


class Decoder:
    """Incremental decoding of a batch through the KV cache: each row's prompt and <sep>,
    then one id a step; with CFG the unconditional rows (<sep> alone) advance alongside."""

    def __init__(self, model, prompts, sep, pad, allowed, gamma, struct):
        rows = [p + [sep] for p in prompts]
        if gamma is not None:
            rows += [[sep] for _ in prompts]
        width = max(len(r) for r in rows)
        ids = [[pad] * (width - len(r)) + r for r in rows]
        valid = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rows])
        self.model, self.allowed, self.gamma, self.b = model, torch.tensor(allowed), gamma, len(prompts)
        # Each row's structure (the unconditional rows read the same ids).
        self.cursors = [struct.start() for _ in prompts] if struct else None
        features = struct.batch(ids, sep) if struct else None
        self.logits, self.cache = model(torch.tensor(ids), valid, None, features)

    def log_probs(self):
        """Normalised log-probabilities [B, A] of the next id over the allowed ids."""
        logp = self.logits[:, -1, self.allowed].log_softmax(-1)
        if self.gamma is not None:
            b = self.b
            logp = logp[b:] + self.gamma * (logp[:b] - logp[b:])
        return logp.log_softmax(-1)

    def advance(self, nxt, done=None):
        """Feeds one id per row (a tensor of B ids); rows in `done` have finished."""
        features = None
        if self.cursors is not None:
            for i, (c, x) in enumerate(zip(self.cursors, nxt.tolist())):
                if done is None or i not in done:
                    c.read(x)
            features = torch.tensor([c.features() for c in self.cursors]).unsqueeze(1)
        if self.gamma is not None:
            nxt = torch.cat([nxt, nxt])
            features = None if features is None else torch.cat([features, features])
        ones = torch.ones(nxt.shape[0], 1, dtype=torch.bool)
        self.logits, self.cache = self.model(nxt.view(-1, 1), ones, self.cache, features)


def generate(model, prompts, sep, pad, allowed, struct, new_tokens, gamma, generator):
    d = Decoder(model, prompts, sep, pad, allowed, gamma, struct)
    for _ in range(new_tokens):
        pick = torch.multinomial(d.log_probs().exp(), 1, generator=generator).squeeze(1)
        d.advance(d.allowed[pick])


def score(model, prompts, sep, pad, allowed, struct, follow, gamma):
    """Log-probabilities over `allowed` at each step of each row, teacher-forced with
    `follow` (one id list per row) through the KV cache; CFG with `gamma` if set."""
    d = Decoder(model, prompts, sep, pad, allowed, gamma, struct)
    out = [[] for _ in prompts]
    for step in range(max(len(f) for f in follow)):
        logp = d.log_probs()
        nxt, done = [], set()
        for i, f in enumerate(follow):
            if step < len(f):
                out[i].append(logp[i].tolist())
                nxt.append(f[step])
            else:
                nxt.append(pad)
                done.add(i)
        d.advance(torch.tensor(nxt), done)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--request", required=True, help="JSON: prompts, sep, pad, allowed, follow (structure)")
    ap.add_argument("--new-tokens", type=int, required=True)
    ap.add_argument("--cfg", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load(args.checkpoint)
    with open(args.request) as f:
        req = json.load(f)
    gammas = {"plain": None} if args.cfg is None else {"plain": None, "cfg": args.cfg}
    # With real lengths: as many steps over the whole batch as qd's longest row took.
    real_steps = req.get("real_steps", {})
    rows = (req["prompts"], req["sep"], req["pad"], req["allowed"], structure(req))
    generator = torch.Generator().manual_seed(0)

    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    with torch.inference_mode():
        serve(
            {
                **{m: (lambda g=g: generate(model, *rows, args.new_tokens, g, generator)) for m, g in gammas.items()},
                **{f"{m}_real": (lambda g=g, n=real_steps[m]: generate(model, *rows, n, g, generator))
                   for m, g in gammas.items() if m in real_steps},
            },
            {"score": lambda: {"logprobs": {m: score(model, *rows, f, gammas[m]) for m, f in req.get("follow", {}).items() if m in gammas}}},
        )


if __name__ == "__main__":
    main()
