#!/usr/bin/env bash
# End to end with containers: builds the images locally (deploy/docker/build-local.sh),
# starts docker-compose.yml (TLS and a token, as bootstrap generates them; actors and the
# evaluator on a read-only state volume) with 2 actors on tiny models, sees the learner step and
# Prometheus scrape it, scales to 3 actors, kills one actor container and sees training
# go on, then stops the learner container (SIGTERM: checkpoint) and sees the restarted
# one resume from that checkpoint. Needs a running Docker engine and Compose: the
# project's machines have both, so where either is missing it FAILS, naming what to
# install or start (it never passes without having run).
#
#   tests/deploy/compose.sh          (from the repository root, after `make setup`)
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() {
  echo "compose: FAIL: $*" >&2
  exit 1
}
command -v docker >/dev/null \
  || fail "the docker CLI is not installed: install Docker Engine and Compose (Debian: apt-get install docker.io docker-compose)"
if ! engine=$(docker info --format '{{.ServerVersion}}' 2>&1) || [ -z "$engine" ]; then
  fail "no Docker engine answers (docker info: $(grep -m1 . <<<"${engine:-no answer}")); start it (systemctl start docker, or dockerd &) and run again"
fi
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  fail "Docker Compose is not installed: install the compose plugin or docker-compose (Debian: apt-get install docker-compose)"
fi
echo "compose: Docker engine $engine, $("${compose[@]}" version 2>/dev/null | sed -n 1p)"

deploy/docker/build-local.sh --cpu

work=$(mktemp -d)
project=qd-e2e-$$
export COMPOSE_PROJECT_NAME=$project
export QD_IMAGE=qd:cpu PROMETHEUS_IMAGE=qd-prometheus:local
export PROMETHEUS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export QD_CONFIG=$work/qd.toml
common="--batch-size 8 --no-progress --threads 1"
export QD_PRETRAIN_ARGS="--preset tiny --steps 30 --lr 0.01 --context 64 $common"
export QD_EMBEDDER_ARGS="--steps 3 $common" QD_JUDGE_ARGS="--steps 3 $common"

cleanup() {
  status=$?
  if [ $status -ne 0 ]; then
    echo "compose: FAILED; the last log lines of every service:"
    "${compose[@]}" logs --no-color --tail 30 || true
  fi
  "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT

# Tiny batches; the rest as deploy/compose/qd.toml.
cat >"$QD_CONFIG" <<'EOF'
[paths]
run_dir = "runs/rl/e2e"
[learner]
batch_prompts = 4
lr = 0.001
warmup_steps = 2
max_steps = 0
checkpoint_every = 10
threads = 1
[actor]
batch_prompts = 4
max_new_tokens = 32
threads = 1
[evaluator]
prompts = 4
every_versions = 5
max_new_tokens = 32
threads = 1
EOF

say() { echo "compose: $*"; }
# Polls `docker inspect -f FORMAT` of the containers until every line matches DONE (a
# grep pattern), at most TIMEOUT s; the last lines are left in $states.
await_states() {
  local format=$1 done=$2 deadline=$((SECONDS + $3))
  shift 3
  while :; do
    states=$(for c in "$@"; do docker inspect -f "$format" "$c"; done)
    grep -qv "$done" <<<"$states" || return 0
    [ $SECONDS -lt $deadline ] || return 1
    sleep 1
  done
}
# The value of a PromQL query's first sample ("" when it has none).
query() {
  curl -fsS --get "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query" --data-urlencode "query=$1" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
# Polls until `query` gives a number for which the python expression `cond` (on x) holds.
wait_for() {
  local q=$1 cond=$2 what=$3 deadline=$((SECONDS + ${4:-240})) v
  while :; do
    v=$(query "$q" 2>/dev/null || true)
    if [ -n "$v" ] && python3 -c "import sys; x=float(sys.argv[1]); sys.exit(not ($cond))" "$v"; then
      say "$what ($q = $v)"
      return 0
    fi
    if [ $SECONDS -ge $deadline ]; then
      say "timed out waiting until $what: $q = ${v:-no data}"
      return 1
    fi
    sleep 1
  done
}

say "up: bootstrap, learner, 2 actors, evaluator, prometheus (project $project)"
COMPOSE_PROFILES=monitoring "${compose[@]}" up -d --scale actor=2 learner actor evaluator prometheus
wait_for 'max(qd_learner_step)' 'x >= 5' "the learner steps and Prometheus scrapes it"
wait_for 'count(up{job="qd-actor"} == 1)' 'x == 2' "Prometheus scrapes 2 actors"
wait_for 'qd_learner_clients_connected{role="actor"}' 'x == 2' "2 actors are connected"
# With the token bootstrap generated: the learner listens beyond loopback only with one.
# (the logs into a variable first: grep -q would close the pipe early, and pipefail
# would see the SIGPIPE)
learner_log=$("${compose[@]}" logs --no-color learner)
grep -q "learner listening.* tls=true.* auth=true" <<<"$learner_log" \
  || { say "the learner serves without TLS or without a token"; exit 1; }
say "the learner serves TLS with the certificate bootstrap generated and requires its token; the actors verify the one and send the other"
# Actors and the evaluator cannot write the state volume the learner reads.
for svc in actor evaluator; do
  c=$("${compose[@]}" ps -q "$svc" | sed -n 1p)
  if docker exec "$c" touch /var/lib/qd/runs/planted 2>/dev/null; then
    say "the $svc can write the learner's state volume"
    exit 1
  fi
done
say "the actors and the evaluator mount the state volume read-only"

# Every healthcheck (qd health over gRPC and HTTP, Prometheus's /-/healthy) passes.
await_states '{{.Name}}={{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' '=healthy$' 120 \
  $("${compose[@]}" ps -q learner actor evaluator prometheus) \
  || { say "not all healthy: $(tr '\n' ' ' <<<"$states")"; exit 1; }
say "every container is healthy ($(wc -l <<<"$states") containers)"

say "scale to 3 actors"
deploy/scale-actors.sh 3 >/dev/null
wait_for 'qd_learner_clients_connected{role="actor"}' 'x == 3' "3 actors are connected"
wait_for 'count(up{job="qd-actor"} == 1)' 'x == 3' "Prometheus scrapes 3 actors"

# (sed, not head: head would close the pipe early and pipefail would see SIGPIPE)
victim=$("${compose[@]}" ps -q actor | sed -n 1p)
step=$(query 'max(qd_learner_step)')
say "kill actor container ${victim:0:12} at step $step"
docker kill "$victim" >/dev/null
wait_for 'max(qd_learner_step)' "x >= $step + 10" "training goes on"

say "stop the learner container"
"${compose[@]}" stop learner
line=$("${compose[@]}" logs --no-color learner | grep "learner stopped" | tail -1)
last=$(grep -o ' step=[0-9]*' <<<"$line" | cut -d= -f2)
[ -n "$last" ] || { say "the stopped learner did not log its last step"; exit 1; }
say "the learner stopped at step $last and wrote a checkpoint"
"${compose[@]}" start learner
deadline=$((SECONDS + 120))
until grep -q "resumed from checkpoint.* step=$last " <<<"$("${compose[@]}" logs --no-color learner)"; do
  [ $SECONDS -lt $deadline ] || { say "the restarted learner did not resume from step $last"; exit 1; }
  sleep 1
done
say "the restarted learner resumed from step $last"
wait_for 'max(qd_learner_step)' "x > $last" "the resumed learner steps on"

# The end of the run: a step budget just ahead (the config file rewritten in place, so
# the bind mount sees it), the learner restarted to read it. Every qd container running
# then must exit 0 by itself, and none be restarted.
# (tiny steps take milliseconds: the budget is far enough ahead that the restarted
# learner trains up to it)
step=$(query 'max(qd_learner_step)')
budget=$((${step%.*} + 400))
sed "s/^max_steps = 0$/max_steps = $budget/" "$QD_CONFIG" >"$QD_CONFIG.new"
cat "$QD_CONFIG.new" >"$QD_CONFIG"
running=$(for c in $("${compose[@]}" ps -q learner actor evaluator); do
  if [ "$(docker inspect -f '{{.State.Running}}' "$c")" = true ]; then echo "$c"; fi
done)
say "finish the run at step $budget ($(wc -l <<<"$running") qd containers running)"
"${compose[@]}" restart learner >/dev/null
# (word splitting of $running is wanted: one container id per word)
# shellcheck disable=SC2086
await_states '{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}' ' exited ' 300 $running \
  || { say "not every container stopped: $(tr '\n' ';' <<<"$states")"; exit 1; }
bad=$(grep -v ' exited 0 ' <<<"$states" || true)
[ -z "$bad" ] || { say "a container did not end with exit code 0: $(tr '\n' ';' <<<"$bad")"; exit 1; }
grep -q "run finished: telling the clients step=$budget " <<<"$("${compose[@]}" logs --no-color learner)" \
  || { say "the learner did not train to step $budget and announce the end of the run"; exit 1; }
grep -q "evaluated .*step=$budget " <<<"$("${compose[@]}" logs --no-color evaluator)" \
  || { say "the evaluator did not score the final version (step $budget)"; exit 1; }
# Its results went to its own volume.
grep -q "\"step\":$budget" <<<"$(docker run --rm -v "${project}_qd-eval:/e:ro" --entrypoint cat "$QD_IMAGE" /e/eval.jsonl)" \
  || { say "eval.jsonl in the qd-eval volume lacks step $budget"; exit 1; }
say "the run finished: every qd container exited 0 ($(wc -l <<<"$states"))"
say "PASSED"
