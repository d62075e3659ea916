"""Runs `qd eval` for every CFG strength and temperature of a grid on one checkpoint and
prints a Markdown table (the first table of docs/results.md).

    python scripts/eval_grid.py --checkpoint runs/pretrain/last.safetensors --prompts 100
"""

import argparse
import json
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qd", default="target/release/qd")
    ap.add_argument("--checkpoint", default="runs/pretrain/last.safetensors")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--gammas", default="1,3,5", help="CFG strengths (1 = no guidance)")
    ap.add_argument("--temperatures", default="0.7,1.0,1.3")
    ap.add_argument("--cfg-scope", default="all", choices=["all", "content"],
                    help="what guidance re-weighs (qd eval --cfg-scope)")
    args = ap.parse_args()
    rows = []
    for gamma in [float(g) for g in args.gammas.split(",")]:
        for temp in [float(t) for t in args.temperatures.split(",")]:
            cmd = [args.qd, "eval", "--checkpoint", args.checkpoint, "--prompts", str(args.prompts),
                   "--temperature", str(temp), "--json"]
            if gamma != 1.0:
                cmd += ["--cfg", str(gamma), "--cfg-scope", args.cfg_scope]
            print(" ".join(cmd), file=sys.stderr)
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append((gamma, temp, json.loads(out)))
    print("| γ | T | quality | adherence | bar validity | embedding diversity | edit diversity | tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for gamma, temp, r in rows:
        print(f"| {gamma:g} | {temp:g} | {r['quality']:.4f} | {r['adherence']:.3f} | {r['validity']:.3f} "
              f"| {r['embed_diversity']:.3f} "
              f"| {r['edit_diversity']:.3f} | {r['tokens_per_s']:.0f} |")
    r = rows[0][2]
    print(f"\nAcross prompts (upper bound, γ = {rows[0][0]:g}, T = {rows[0][1]:g}): embedding "
          f"{r['embed_diversity_across']:.3f}, edit {r['edit_diversity_across']:.3f}; "
          f"{r['prompts']} prompts × {r['samples'] // max(r['prompts'], 1)} samples. "
          f"Quality of the real held-out tunes for their own prompts: {r['quality_of_real_tunes']:.4f}.")


if __name__ == "__main__":
    main()
