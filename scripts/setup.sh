#!/usr/bin/env bash
# Idempotent set-up for qd: a project-local Python venv with the libtorch that tch
# expects, and the folk corpus extracted from the music21 wheel. Seconds when done.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0      # tch 0.26 links against this libtorch
MUSIC21_VERSION=10.5.1    # the wheel that ships the ABC corpus
COLLECTIONS="essenFolksong oneills1850 ryansMammoth airdsAirs miscFolk"
PYTHON=${PYTHON:-python3}
VENV=.venv

# --- libtorch, from the PyPI torch wheel -------------------------------------------
if ! "$VENV/bin/python" - "$TORCH_VERSION" 2>/dev/null <<'PY'
import sys, torch
sys.exit(torch.__version__.split("+")[0] != sys.argv[1])
PY
then
  echo "setup: installing torch==$TORCH_VERSION into $VENV (a few minutes, once)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
fi

# --- abc2midi, a standard ABC tool the tests check rendered tunes with (optional) ------
if ! command -v abc2midi >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing abcmidi (abc2midi) from Debian's packages"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq abcmidi; } >/dev/null 2>&1 \
    || echo "setup: could not install abcmidi; the tests that check exported tunes with abc2midi will fail"
fi

# --- the corpus ---------------------------------------------------------------------
marker="data/raw/.music21-$MUSIC21_VERSION"
if [ ! -f "$marker" ]; then
  wheel=".cache/wheels/music21-$MUSIC21_VERSION-py3-none-any.whl"
  if [ ! -f "$wheel" ]; then
    echo "setup: downloading music21==$MUSIC21_VERSION (the ABC corpus)"
    "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps \
      -d .cache/wheels "music21==$MUSIC21_VERSION"
  fi
  echo "setup: extracting $COLLECTIONS into data/raw/"
  "$VENV/bin/python" - "$wheel" data/raw $COLLECTIONS <<'PY'
import os, shutil, sys, zipfile
wheel, out, collections = sys.argv[1], sys.argv[2], sys.argv[3:]
n = 0
with zipfile.ZipFile(wheel) as z:
    for c in collections:
        shutil.rmtree(os.path.join(out, c), ignore_errors=True)
        prefix = f"music21/corpus/{c}/"
        names = [m for m in z.namelist() if m.startswith(prefix) and m.endswith(".abc")]
        if not names:
            sys.exit(f"setup: {c} not found in {wheel}")
        os.makedirs(os.path.join(out, c))
        for m in names:
            with z.open(m) as src, open(os.path.join(out, c, os.path.basename(m)), "wb") as dst:
                shutil.copyfileobj(src, dst)
            n += 1
print(f"setup: {n} .abc files in {out}/")
PY
  touch "$marker"
fi
