#!/usr/bin/env bash
# Stages qd's runtime into OUT for an image: bin/qd, bin/qd-bootstrap, lib/ (libtorch and
# what it links, from the venv's torch wheel), data/raw (the folk corpus) and data/folk
# (the prepared dataset).
#   --cpu   only the libraries qd links (runs on CPU, whatever the wheel)
#   --cuda  also every CUDA library of the wheel (libtorch loads cuDNN & co. at run time)
#
#   deploy/docker/stage.sh [--cpu|--cuda] OUT     (after `make setup`)
set -euo pipefail
cd "$(dirname "$0")/../.."

variant=cpu
case "${1:-}" in
  --cpu | --cuda) variant=${1#--}; shift ;;
esac
[ $# -eq 1 ] || { echo "usage: $0 [--cpu|--cuda] OUT" >&2; exit 2; }
out=$1
qd=${QD:-target/release/qd}
[ -x "$qd" ] || { echo "stage: $qd not found: run make setup first" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/data"
install -m 755 "$qd" "$out/bin/qd"
install -m 755 deploy/docker/bootstrap.sh "$out/bin/qd-bootstrap"

# The shared libraries qd needs that the base image lacks: everything ldd resolves
# outside the system library folders.
missing=$(ldd "$qd" | awk '/not found/ {print $1}')
[ -z "$missing" ] || { echo "stage: $qd cannot find: $missing" >&2; exit 1; }
ldd "$qd" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' \
  | grep -v -E '^/(usr/)?lib(64)?/' | xargs -r cp -L -t "$out/lib/"
if [ "$variant" = cuda ]; then
  grep -q libtorch_cuda <<<"$(ldd "$qd")" \
    || { echo "stage: $qd does not link libtorch_cuda: build it with QD_CUDA=1 make build" >&2; exit 1; }
  site=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
  find "$site/torch/lib" "$site/nvidia" -name '*.so*' -type f -exec cp -n -t "$out/lib/" {} +
fi

cp -r data/raw "$out/data/raw"
rm -f "$out/data/raw"/.music21-*
"$qd" data prepare --raw "$out/data/raw" --out "$out/data/folk" >/dev/null
echo "stage: $out ($variant): $(du -sh "$out" | cut -f1), $(ls "$out/lib" | wc -l) libraries"
