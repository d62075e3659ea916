#!/usr/bin/env bash
# make gpu-check: the CUDA path verified and measured in one go, on a machine with an
# NVIDIA GPU (about 5 minutes; everything it writes goes to runs/gpu-check/):
#   1. the GPU is there (nvidia-smi) and the venv's torch sees it;
#   2. qd built against the venv's CUDA libtorch (QD_CUDA=1), and libtorch in qd sees it;
#   3. the pre-training step on cuda against PyTorch eager on cuda: the same loss and
#      gradient (checked), and the time of each;
#   4. generation on cuda, with and without CFG: qd's tokens/s;
#   5. a whole run on cuda: `qd run` with the learner, an actor and the evaluator on the
#      GPU, on tiny models of a fixture corpus, to its step budget.
# Without a GPU it stops at step 1 and says so.
#
#   scripts/gpu-check.sh          (from the repository root, after make setup)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
PY=$ROOT/.venv/bin/python
OUT=$ROOT/runs/gpu-check
QD=$ROOT/target/release/qd

say() { printf 'gpu-check: %s\n' "$*"; }
fail() {
    printf 'gpu-check: FAIL: %s\n' "$*" >&2
    exit 1
}
start=$SECONDS

# 1. The GPU.
command -v "$NVIDIA_SMI" >/dev/null 2>&1 ||
    fail "no NVIDIA GPU here ($NVIDIA_SMI not found): make gpu-check runs on a machine with an NVIDIA GPU and its driver"
"$NVIDIA_SMI" --query-gpu=name,driver_version,memory.total --format=csv,noheader ||
    fail "$NVIDIA_SMI cannot talk to the driver"
[[ -x $PY ]] || fail "no venv at .venv: run make setup first"
"$PY" -c 'import sys, torch; print("torch", torch.__version__, "CUDA", torch.version.cuda); sys.exit(0 if torch.cuda.is_available() else 1)' ||
    fail "the venv's torch does not see the GPU: install a CUDA build of torch==2.13.0 into .venv (the PyPI wheel for Linux x86-64 is one)"

# 2. The CUDA build.
say "building qd against the venv's CUDA libtorch (QD_CUDA=1)"
QD_CUDA=1 VIRTUAL_ENV=$ROOT/.venv PATH=$ROOT/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1 \
    cargo build --release --locked || fail "the CUDA build failed"
ldd "$QD" | grep -q libtorch_cuda || fail "$QD does not link libtorch_cuda"
"$QD" info --json | "$PY" -c 'import json, sys; i = json.load(sys.stdin); print(i); sys.exit(0 if i["cuda_devices"] > 0 else 1)' ||
    fail "libtorch in qd sees no CUDA device"

mkdir -p "$OUT"
[[ -f data/folk/dataset.json ]] || "$QD" data prepare >/dev/null

# 3. The pre-training step on cuda against PyTorch on cuda.
say "pre-training step on cuda, qd against PyTorch eager"
"$QD" bench pretrain --device cuda --json >"$OUT/pretrain.json"
"$PY" - "$OUT/pretrain.json" <<'EOF' || fail "qd's pre-training step on cuda does not match PyTorch's (above)"
import json, sys
r = json.load(open(sys.argv[1]))
print(f"qd {r['qd_step_seconds']:.4f} s, PyTorch {r['torch_step_seconds']:.4f} s, "
      f"speed-up {r['qd_speedup']:.2f}x, {100 * r['share_of_peak']:.0f}% of {r['gemm_peak_gflops']:.0f} GFLOP/s; "
      f"|loss diff| {r['loss_diff']:.1e}, gradient {r['grad_rel_diff']:.1e}")
sys.exit(0 if r["loss_diff"] < 1e-4 and r["grad_rel_diff"] < 1e-3 else 1)
EOF

# 4. Generation on cuda.
say "generation on cuda"
"$QD" bench generate --device cuda --batch 64 --no-reference --json >"$OUT/generate.json"
"$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); print(f"qd {r[\"qd_plain\"]:.0f} tok/s plain, {r[\"qd_cfg\"]:.0f} with CFG")' "$OUT/generate.json"

# 5. A whole run on cuda, tiny models.
say "qd run on cuda (tiny models)"
W=$OUT/run
rm -rf "$W" && mkdir -p "$W/raw/essenFolksong"
for c in oneills1850 ryansMammoth airdsAirs miscFolk; do mkdir -p "$W/raw/$c"; done
for i in $(seq 0 39); do
    printf 'X:%d\nT:Lied %d\nO:Europa, Mitteleuropa, Deutschland\nR:Liebeslied]\nM:2/4\nL:1/16\nK:G\nCDEF GABc|cBAG FEDC|]\n\n' "$i" "$i"
done >"$W/raw/essenFolksong/kinder0.abc"
COMMON=(--data "$W/folk" --batch-size 8 --no-progress --device cuda)
"$QD" data prepare --raw "$W/raw" --out "$W/folk" >/dev/null
"$QD" pretrain --preset tiny --steps 20 --context 64 --out "$W/pt" "${COMMON[@]}" >/dev/null
"$QD" embedder train --steps 3 --out "$W/emb.safetensors" "${COMMON[@]}" >/dev/null
"$QD" judge train --steps 3 --out "$W/judge.safetensors" "${COMMON[@]}" >/dev/null
timeout 300 "$QD" run \
    --set "paths.data=$W/folk" --set "paths.base=$W/pt/last.safetensors" \
    --set "paths.embedder=$W/emb.safetensors" --set "paths.judge=$W/judge.safetensors" \
    --set "paths.run_dir=$W/rl" --set learner.device=cuda --set actor.device=cuda \
    --set evaluator.device=cuda --set learner.max_steps=20 --set learner.batch_prompts=4 \
    --set actor.batch_prompts=4 --set actor.max_new_tokens=32 --set run.actors=1 \
    --set evaluator.prompts=4 --set evaluator.max_new_tokens=32 --set learner.listen=127.0.0.1:0 \
    --set learner.metrics_listen= --set actor.metrics_listen= --set evaluator.metrics_listen= \
    >"$W/run.log" 2>&1 || { tail -n 20 "$W/run.log" >&2; fail "qd run on cuda did not finish (log: $W/run.log)"; }
[[ -f $W/rl/student.safetensors ]] || fail "qd run on cuda wrote no student"

say "OK in $((SECONDS - start)) s; reports in $OUT"
