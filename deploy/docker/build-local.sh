#!/usr/bin/env bash
# Builds qd's images on a machine without a container registry:
#   qd-base:bookworm      Debian bookworm from debootstrap (base-image.sh)
#   qd:cpu | qd:cuda      the Dockerfile's `local` target with the artefacts of this
#                         host's build (stage.sh), on that base
#   qd-prometheus:local   Prometheus from Debian's package, on that base
# docker compose then runs with PROMETHEUS_IMAGE=qd-prometheus:local (Grafana has no
# Debian package: it needs a registry or an image loaded with `docker load`).
#
#   deploy/docker/build-local.sh [--cpu|--cuda]       (after `make setup`; root for debootstrap)
set -euo pipefail
cd "$(dirname "$0")/../.."

variant=cpu
case "${1:-}" in
  --cpu | --cuda) variant=${1#--} ;;
  "") ;;
  *) echo "usage: $0 [--cpu|--cuda]" >&2; exit 2 ;;
esac
base=qd-base:bookworm

deploy/docker/base-image.sh "$base"
ctx=target/docker/$variant
deploy/docker/stage.sh "--$variant" "$ctx/dist"
echo "build-local: qd:$variant"
docker build --quiet -f deploy/docker/Dockerfile --target local --build-arg "BASE=$base" \
  -t "qd:$variant" "$ctx" >/dev/null
# Docker's layer cache makes this a no-op when prometheus.Dockerfile is unchanged.
echo "build-local: qd-prometheus:local (Debian's prometheus)"
docker build --quiet -f deploy/docker/prometheus.Dockerfile --build-arg "BASE=$base" \
  -t qd-prometheus:local deploy/docker >/dev/null
for image in "$base" "qd:$variant" qd-prometheus:local; do
  echo "build-local: $image $(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec)"
done
