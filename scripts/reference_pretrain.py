"""PyTorch-eager reference for `qd bench pretrain`.

One pre-training step in plain PyTorch: the masked cross-entropy of next-token
prediction on a right-padded batch (the loss on the tune and `<eos>` targets only), its
backward, global-norm gradient clipping and AdamW (decoupled weight decay on matrices
only), on the model `qd export` ships (qd_model.py; no dropout, as qd runs it here).

It loads the weights from a qd checkpoint, reads the batch qd trained on from
--request, runs the first step and prints one JSON line: its loss and gradient norm, and
the threads used. With --tensors-out it also writes the first step's gradient
(`grad.<name>`, before clipping) as safetensors. Then it answers `step` on standard
input with one more timed step (reference_learner.serve).
"""

import argparse
import json

import torch

from qd_model import load
from reference_learner import adamw, serve, structure, write_safetensors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="the model (qd policy checkpoint)")
    ap.add_argument("--request", required=True, help="JSON: the batch and the optimizer settings")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tensors-out", help="write the first step's gradient here")
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.request) as f:
        req = json.load(f)
    device = torch.device(args.device)
    model = load(args.weights).to(device)
    shape = req["shape"]
    ids = torch.tensor(req["input"], dtype=torch.long, device=device).view(shape)
    valid = torch.tensor(req["valid"], dtype=torch.bool, device=device).view(shape)
    target = torch.tensor(req["target"], dtype=torch.long, device=device).view(shape)
    mask = torch.tensor(req["loss_mask"], dtype=torch.float32, device=device).view(shape)
    struct = structure(req)
    features = struct.batch(ids.tolist(), req["sep"]).to(device) if struct else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    opt_cfg = req["optimizer"]
    params = dict(model.named_parameters())
    opt = adamw(params, opt_cfg)

    def one(keep_grads=False):
        opt.zero_grad(set_to_none=False)
        logits, _ = model(ids, valid, None, features)
        nll = -logits.log_softmax(-1).gather(2, target.unsqueeze(2)).squeeze(2)
        loss = (nll * mask).sum() / mask.sum().clamp_min(1.0)
        loss.backward()
        grads = {f"grad.{n}": p.grad.clone() for n, p in params.items()} if keep_grads else None
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), opt_cfg["grad_clip"])
        opt.step()
        return loss, norm, grads

    loss, norm, grads = one(keep_grads=True)
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "loss": loss.item(),
        "grad_norm": norm.item(),
    }
    if args.tensors_out:
        write_safetensors(args.tensors_out, {k: v.cpu() for k, v in grads.items()})
    print(json.dumps(out), flush=True)

    def timed_step():
        one()
        sync()

    serve({"step": timed_step})


if __name__ == "__main__":
    main()
