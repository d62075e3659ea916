"""PyTorch-eager reference for `qd bench learner`.

The learner's whole step written in plain PyTorch: the frozen teacher's conditional and
unconditional passes under no-grad with classifier-free guidance, the student's forward
and backward through `L = L_distill + β·L_pg` (the divergence to the guided teacher per
generated token, and REINFORCE on the pair reward with truncated importance weights),
global-norm gradient clipping and AdamW (decoupled weight decay on matrices only).

It loads the teacher and the student from qd checkpoints (the model is the one in
reference_generate.py), reads the batch qd trained on from --request, runs the
request's `compare_steps` steps on it (torch.optim.AdamW) and prints one JSON line: the
first step's loss terms and gradient norms (the step's, and each term's alone), and the
threads used. With --tensors-out it also writes, as safetensors, the first step's
gradient (`grad.<name>`, before clipping), and the parameters (`param.<name>`) and AdamW's
moments (`m.<name>`, `v.<name>`: `exp_avg`, `exp_avg_sq`) after the last, so that qd can
compare them with its own, tensor by tensor. Then it answers `step` on standard
input with one more timed step, `{"seconds": s}` (see `serve`), so that qd can
interleave its own steps with the reference's.
"""

import argparse
import importlib
import json
import struct
import sys
import time

import torch

from qd_model import load

TEACHER_LOG_FLOOR = -30.0


def structure(req):
    """The task's structure (a module's `Metrical`-like class over the vocabulary's
    texts) when the request names one, for policies that embed it; else None."""
    s = req.get("structure")
    if not s:
        return None
    return importlib.import_module(s["module"]).Metrical(s["vocab"], s["generatable"])


def rows(pairs, with_prompt, sep, pad, struct=None):
    """Right-padded `[prompt] <sep> y` rows, their mask, the flat index of the logits
    that predict each generated token, in order, and the rows' structure features."""
    seqs = []
    for p in pairs:
        for s in p["samples"]:
            prefix = p["prompt"] if with_prompt else []
            seqs.append((prefix + [sep] + s["tokens"], len(prefix), len(s["tokens"])))
    t = max(len(s) for s, _, _ in seqs)
    ids = torch.full((len(seqs), t), pad, dtype=torch.long)
    valid = torch.zeros((len(seqs), t), dtype=torch.bool)
    gather = []
    for r, (s, plen, n) in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        valid[r, : len(s)] = True
        gather.extend(r * t + plen + k for k in range(n))
    features = struct.batch(ids.tolist(), sep) if struct else None
    return ids, valid, torch.tensor(gather), features


def token_logprobs(model, batch, allowed):
    ids, valid, gather, features = batch
    logits, _ = model(ids, valid, None, features)
    return logits.reshape(-1, logits.shape[-1])[gather][:, allowed].log_softmax(-1)


def guide(c, u, gamma, plausibility, groups):
    """CFG `u + γ(c − u)` with the plausibility constraint and, with groups, guidance
    within each group only (the group keeps its conditional probability)."""
    g = u + gamma * (c - u)
    if plausibility > 0:
        implausible = c < c.amax(-1, keepdim=True) + torch.log(torch.tensor(plausibility))
        g = g.masked_fill(implausible, float("-inf"))
        c = c.masked_fill(implausible, float("-inf"))
    if not groups:
        return g
    out = c.clone()
    for m in groups:
        def lse(x):
            return x.masked_fill(~m, float("-inf")).logsumexp(-1, keepdim=True)

        within = g - lse(g).clamp_min(-1e30)
        out = torch.where(m, lse(c) + within, out)
    return out


def kl(a, b):
    return (a.exp() * (a - b)).sum(-1)


def divergence(ls, lt, kind, alpha):
    if kind == "reverse_kl":
        return kl(ls, lt)
    if kind == "forward_kl":
        return kl(lt, ls)
    m = torch.stack([ls + torch.log(torch.tensor(alpha)), lt + torch.log(torch.tensor(1 - alpha))]).logsumexp(0)
    return alpha * kl(ls, m) + (1 - alpha) * kl(lt, m)


class Step:
    """The learner's step on one batch; `__call__` returns (loss, distill, pg)."""

    def __init__(self, req, teacher, student, allowed, groups):
        self.req, self.student, self.allowed = req, student, allowed
        pairs, sep, pad = req["pairs"], req["sep"], req["pad"]
        struct = structure(req)
        self.cond = rows(pairs, True, sep, pad, struct)
        self.uncond = rows(pairs, False, sep, pad, struct)
        self.teacher, self.groups = teacher, groups
        index_of = {a: i for i, a in enumerate(req["allowed"])}
        seq_of, target, behaviour, adv, pair_of = [], [], [], [], []
        for i, p in enumerate(pairs):
            for s in p["samples"]:
                pair_of.append(i)
                seq_of += [len(behaviour)] * len(s["tokens"])
                target += [index_of[t] for t in s["tokens"]]
                behaviour.append(sum(float(x) for x in s["logprobs"]))
                adv.append(p["reward"] - req["baseline"])
        self.seq_of, self.target = torch.tensor(seq_of), torch.tensor(target)
        self.pair_of = torch.tensor(pair_of)
        self.behaviour = torch.tensor(behaviour, dtype=torch.float32)
        self.adv = torch.tensor(adv, dtype=torch.float32)
        self.n_prompts = len(pairs)

    def teacher_logprobs(self):
        cfg = self.req["loss"]
        with torch.no_grad():
            c = token_logprobs(self.teacher, self.cond, self.allowed)
            u = token_logprobs(self.teacher, self.uncond, self.allowed)
            g = guide(c, u, cfg["cfg_gamma"], cfg["cfg_plausibility"], self.groups)
            return g.log_softmax(-1).clamp_min(TEACHER_LOG_FLOOR)

    def __call__(self):
        cfg = self.req["loss"]
        lt = self.teacher_logprobs()
        ls = token_logprobs(self.student, self.cond, self.allowed)
        per_token = ls.gather(1, self.target.unsqueeze(1)).squeeze(1)
        logp_seq = torch.zeros(len(self.behaviour)).index_add(0, self.seq_of, per_token)
        distill = divergence(ls, lt, cfg["divergence"], cfg["jsd_alpha"]).sum() / self.n_prompts
        # The pair's weight, min(ρ̄, ρ₁·ρ₂), on both of its samples.
        log_ratio = logp_seq.detach() - self.behaviour
        pair_log_ratio = torch.zeros(self.n_prompts).index_add(0, self.pair_of, log_ratio)
        weight = pair_log_ratio.exp().clamp_max(cfg["rho_bar"])[self.pair_of]
        pg = -(self.adv * weight * logp_seq).sum() / self.n_prompts
        return distill + cfg["beta"] * pg, distill, pg


def adamw(params, cfg):
    """AdamW as qd's: decoupled weight decay on matrices (and embeddings) only."""
    return torch.optim.AdamW(
        [
            {"params": [p for p in params.values() if p.dim() >= 2], "weight_decay": cfg["weight_decay"]},
            {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=cfg["lr"],
        betas=(cfg["beta1"], cfg["beta2"]),
        eps=cfg["eps"],
    )


def serve(timed, answers=None):
    """Answers one command a line on standard input until it closes, one JSON line each:
    a command of `timed` (name -> function) runs once and answers `{"seconds": s}`, one
    of `answers` answers what its function returns. qd times its own side between two
    commands, so each repetition of qd and of the reference sees the same machine."""
    answers = answers or {}
    for line in sys.stdin:
        command = line.strip()
        if command in timed:
            start = time.perf_counter()
            timed[command]()
            reply = {"seconds": time.perf_counter() - start}
        elif command in answers:
            reply = answers[command]()
        else:
            sys.exit(f"unknown command {command!r} (one of {', '.join([*timed, *answers])})")
        print(json.dumps(reply), flush=True)


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        flat = t.detach().to(torch.float32).flatten().tolist()
        b = struct.pack(f"<{len(flat)}f", *flat)
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="the base model (qd policy checkpoint)")
    ap.add_argument("--student", required=True, help="the student's starting weights")
    ap.add_argument("--request", required=True, help="JSON: the batch, vocabulary, loss and optimizer settings")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tensors-out", help="write the first step's gradient and updated parameters here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.request) as f:
        req = json.load(f)
    teacher, student = load(args.teacher), load(args.student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    allowed = torch.tensor(req["allowed"])
    groups = []
    for g in req["groups"]:
        m = torch.zeros(len(req["allowed"]), dtype=torch.bool)
        m[g] = True
        groups.append(m)
    opt_cfg = req["optimizer"]
    params = dict(student.named_parameters())
    opt = adamw(params, opt_cfg)
    step = Step(req, teacher, student, allowed, groups)

    beta = req["loss"]["beta"]

    def one(keep_grads=False):
        opt.zero_grad(set_to_none=False)
        loss, distill, pg = step()
        # As qd's learner: at β ≠ 0 the policy-gradient term's gradient apart first, so
        # that each term's norm is known.
        pg_grads = (
            torch.autograd.grad(beta * pg, list(params.values()), retain_graph=True) if beta != 0 else None
        )
        loss.backward()
        grads = {f"grad.{n}": p.grad.clone() for n, p in params.items()} if keep_grads else None
        if pg_grads is None:
            norm_pg, norm_distill = 0.0, torch.nn.utils.get_total_norm([p.grad for p in params.values()]).item()
        else:
            norm_pg = torch.nn.utils.get_total_norm(pg_grads).item()
            rest = [p.grad - g for p, g in zip(params.values(), pg_grads)]
            norm_distill = torch.nn.utils.get_total_norm(rest).item()
        if opt_cfg.get("grad_clip_scope", "total") == "per_term" and pg_grads is not None:
            # Each term's gradient clipped on its own, then summed.
            norm = torch.nn.utils.get_total_norm([p.grad for p in params.values()])
            scale = lambda n: opt_cfg["grad_clip"] / (n + 1e-6) if n > opt_cfg["grad_clip"] else 1.0
            s_d, s_pg = scale(norm_distill), scale(norm_pg)
            with torch.no_grad():
                for p, g in zip(params.values(), pg_grads):
                    p.grad.copy_(s_d * (p.grad - g) + s_pg * g)
        else:
            norm = torch.nn.utils.clip_grad_norm_(student.parameters(), opt_cfg["grad_clip"])
        opt.step()
        return loss, distill, pg, (norm.item(), norm_distill, norm_pg), grads

    # The compared steps (and the warm-up): the first one's numbers and gradient, the
    # weights and AdamW's moments after the last.
    loss, distill, pg, norms, grads = one(keep_grads=True)
    for _ in range(req.get("compare_steps", 1) - 1):
        one()
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loss": loss.item(),
        "distill": distill.item(),
        "pg": pg.item(),
        "grad_norm": norms[0],
        "grad_norm_distill": norms[1],
        "grad_norm_pg": norms[2],
    }
    if args.tensors_out:
        moments = {}
        for n, p in params.items():
            state = opt.state[p]
            moments[f"m.{n}"], moments[f"v.{n}"] = state["exp_avg"], state["exp_avg_sq"]
        write_safetensors(args.tensors_out, {**grads, **{f"param.{n}": p for n, p in params.items()}, **moments})
    print(json.dumps(out), flush=True)
    serve({"step": one})


if __name__ == "__main__":
    main()
