#!/usr/bin/env bash
# Builds a Debian base image without a registry: debootstrap a minimal bookworm root
# file system from the Debian mirror and `docker import` it. The images built from it
# are the same as from `debian:bookworm-slim`; a machine that can pull uses that instead.
#
#   deploy/docker/base-image.sh [TAG]        (default qd-base:bookworm; root needed)
set -euo pipefail

TAG=${1:-qd-base:bookworm}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base-image: $TAG exists"
  exit 0
fi
command -v debootstrap >/dev/null || {
  echo "base-image: installing debootstrap from Debian's packages"
  apt-get install -y -qq debootstrap >/dev/null
}

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "base-image: debootstrap $SUITE (minbase) from $MIRROR (a few minutes, once)"
debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 \
  || { tail -20 "$root.log"; echo "base-image: debootstrap failed" >&2; exit 1; }
rm -f "$root.log"
# The same slimming as the official -slim images: no apt lists, docs or caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/info/*
tar --numeric-owner -C "$root" -c . \
  | docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$TAG" >/dev/null
echo "base-image: $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | numfmt --to=iec))"
