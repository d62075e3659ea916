"""The table of `make bench`: every line qd against its reference or its physical limit,
as a ratio, with the target it is held to, from the JSON reports of one run of
`qd bench generate`, `pretrain`, `learner` and `service` in a folder.

    python scripts/bench_summary.py runs/bench      # prints the table, writes suite.json
"""

import json
import sys
from pathlib import Path


def load(folder, name):
    path = folder / f"{name}.json"
    if not path.exists():
        sys.exit(f"{path} is missing: run `qd bench {name} --json > {path}` (make bench does)")
    return json.loads(path.read_text())


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    folder = Path(sys.argv[1])
    gen, pre, lrn, svc = (load(folder, n) for n in ("generate", "pretrain", "learner", "service"))
    rows = []

    def row(what, qd, reference, ratio, target, met, note=""):
        rows.append({"measurement": what, "qd": qd, "reference": reference, "ratio": ratio,
                     "target": target, "met": met, "note": note})

    for name, r in (("learner step", lrn), ("pre-training step", pre)):
        target = 1.3 if name == "learner step" else 1.2
        speedup = r.get("qd_speedup")
        row(f"{name}: qd / PyTorch eager speed", f"{r['qd_step_seconds']:.4f} s",
            f"{r['torch_step_seconds']:.4f} s" if r.get("torch_step_seconds") else "-",
            speedup, f">= {target}", speedup is not None and speedup >= target,
            f"|loss diff| {r.get('loss_diff', float('nan')):.1e}, gradient {r.get('grad_rel_diff', float('nan')):.1e}")
        row(f"{name}: share of float32 GEMM rate", f"{r['qd_gflops']:.1f} GFLOP/s",
            f"{r['gemm_peak_gflops']:.1f} GFLOP/s", r["share_of_peak"], "-", None)
    for kind in ("plain", "cfg"):
        ratio = gen.get(f"qd_over_torch_{kind}")
        torch = gen.get(f"torch_{kind}")
        row(f"generation ({'no CFG' if kind == 'plain' else 'CFG'}): qd / PyTorch eager tokens/s",
            f"{gen[f'qd_{kind}']:.0f} tok/s", f"{torch:.0f} tok/s" if torch else "-",
            ratio, ">= 1.5", ratio is not None and ratio >= 1.5)
    for kind in ("plain", "cfg"):
        ratio = gen.get(f"qd_over_torch_{kind}_real")
        torch = gen.get(f"torch_{kind}_real")
        row(f"generation, real lengths ({'no CFG' if kind == 'plain' else 'CFG'}): qd / PyTorch eager tokens/s",
            f"{gen[f'qd_{kind}_real']:.0f} tok/s", f"{torch:.0f} tok/s" if torch else "-",
            ratio, ">= 2", ratio is not None and ratio >= 2,
            f"mean length {gen[f'mean_length_{kind}']:.0f} of {gen['new_tokens']}")
    for d in svc["deliveries"]:
        ratio = d["delivery_over_copy"]
        row(f"weight delivery to {d['subscribers']}: qd / raw loopback copy time",
            f"{1e3 * d['delivery_seconds']:.1f} ms", f"{1e3 * d['loopback_copy_seconds']:.1f} ms",
            ratio, "<= 1.5", ratio <= 1.5, f"{svc['weight_bytes'] / 1e6:.1f} MB")
    one = next((r for r in svc["runs"] if r["actors"] == 1), None)
    for r in svc["runs"]:
        scale = r["trajectories_per_s"] / one["trajectories_per_s"] if one else None
        row(f"service with {r['actors']} actor(s): trajectories/s against 1 actor",
            f"{r['trajectories_per_s']:.2f}/s", f"{one['trajectories_per_s']:.2f}/s" if one else "-",
            scale, "-", None, f"learner idle {100 * r['learner_idle_share']:.0f}% (target < 10%)")

    fmt = lambda v: "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)
    mark = {True: "yes", False: "no", None: "-"}
    print("| measurement | qd | reference | ratio | target | met | note |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['measurement']} | {r['qd']} | {r['reference']} | {fmt(r['ratio'])} | "
              f"{r['target']} | {mark[r['met']]} | {r['note']} |")
    threads = {lrn.get("threads"), pre.get("threads"), gen.get("threads")}
    print(f"\nthreads: {', '.join(str(t) for t in sorted(t for t in threads if t is not None))}; "
          f"medians of interleaved repetitions (docs/performance.md)")
    (folder / "suite.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(f"wrote {folder / 'suite.json'}")


if __name__ == "__main__":
    main()
