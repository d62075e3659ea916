#!/usr/bin/env bash
# Sets the number of qd actors, in docker compose (default) or in Kubernetes.
#
#   deploy/scale-actors.sh N              docker compose (run from the repository root,
#                                         or set COMPOSE_FILE / COMPOSE_PROJECT_NAME)
#   deploy/scale-actors.sh --k8s N        kubectl, namespace $QD_NAMESPACE (default qd)
#
# Actors register with the learner by themselves; removed ones are stopped with SIGTERM.
set -euo pipefail

target=compose
if [ "${1:-}" = "--k8s" ]; then target=k8s; shift; fi
n=${1:-}
if ! [[ "$n" =~ ^[0-9]+$ ]] || [ $# -ne 1 ]; then
  echo "usage: $0 [--k8s] N   (N: the number of actors, 0 or more)" >&2
  exit 2
fi

case $target in
  compose)
    if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
    "${compose[@]}" up -d --no-recreate --scale "actor=$n" actor
    "${compose[@]}" ps actor
    ;;
  k8s)
    ns=${QD_NAMESPACE:-qd}
    # The actors are a Job of interchangeable workers: its parallelism is their count.
    kubectl -n "$ns" patch job/qd-actor --type merge -p "{\"spec\":{\"parallelism\":$n}}"
    deadline=$((SECONDS + 300))
    until [ "$(kubectl -n "$ns" get job/qd-actor -o jsonpath='{.status.ready}')" = "$n" ] \
      || { [ "$n" = 0 ] && [ -z "$(kubectl -n "$ns" get job/qd-actor -o jsonpath='{.status.active}')" ]; }; do
      [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $n ready actors" >&2; exit 1; }
      sleep 2
    done
    kubectl -n "$ns" get job/qd-actor
    ;;
esac
