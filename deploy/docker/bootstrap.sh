#!/usr/bin/env bash
# qd-bootstrap: fills the state directory with what the services load, skipping what is
# already there: the prepared dataset, the pre-trained policy (an interrupted pre-training
# resumes; a finished one returns at once), the diversity embedder and the judge.
# Extra flags for each step: QD_PRETRAIN_ARGS, QD_EMBEDDER_ARGS, QD_JUDGE_ARGS
# (e.g. QD_PRETRAIN_ARGS="--preset tiny --steps 50" for a quick trial). With
# QD_TOKEN_FILE set, a random service token is written there unless one already is.
# With QD_TLS_DIR set, a CA and the learner's certificate for QD_TLS_NAMES (host names,
# comma-separated; default `learner`) are generated there unless they already are, and the
# CA certificate, which clients verify the learner with, is copied to tls/ca.pem.
set -euo pipefail
cd "${QD_STATE:-/var/lib/qd}"
corpus=${QD_CORPUS:-/opt/qd/data/raw}

# TLS (compose): the learner's key stays in QD_TLS_DIR, which only the learner mounts.
if [ -n "${QD_TLS_DIR:-}" ]; then
  names=()
  IFS=, read -ra hosts <<<"${QD_TLS_NAMES:-learner}"
  for h in "${hosts[@]}"; do names+=(--name "$h"); done
  qd tls init --out "$QD_TLS_DIR" "${names[@]}"
  mkdir -p tls
  install -m 0644 "$QD_TLS_DIR/ca.pem" tls/ca.pem
fi

# The service token (compose): generated once, readable by the qd user only.
if [ -n "${QD_TOKEN_FILE:-}" ] && [ ! -s "$QD_TOKEN_FILE" ]; then
  mkdir -p "$(dirname "$QD_TOKEN_FILE")"
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$QD_TOKEN_FILE")
  echo "qd-bootstrap: generated the service token in $QD_TOKEN_FILE"
fi

if [ ! -f data/folk/dataset.json ]; then
  qd data prepare --raw "$corpus" --out data/folk
fi
# shellcheck disable=SC2086  # the *_ARGS are word lists
qd pretrain ${QD_PRETRAIN_ARGS:-}
if [ ! -f runs/embedder.safetensors ]; then
  qd embedder train ${QD_EMBEDDER_ARGS:-}
fi
if [ ! -f runs/judge.safetensors ]; then
  qd judge train ${QD_JUDGE_ARGS:-}
fi
echo "qd-bootstrap: $(pwd) holds the dataset, the base policy, the embedder and the judge"
