# Prometheus from Debian's package, for machines that cannot pull prom/prometheus
# (deploy/docker/build-local.sh). Same entrypoint, user and data path as the official
# image, and wget for the compose healthcheck, as there.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
