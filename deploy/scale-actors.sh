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
    kubectl -n "$ns" scale deployment/qd-actor --replicas="$n"
    kubectl -n "$ns" rollout status deployment/qd-actor --timeout=300s
    ;;
esac
