# syntax=docker/dockerfile:1
#
# pgheal container image.
#
#   docker build -t pgheal .
#   docker run --rm -p 6432:6432 -p 9930:9930 \
#     -e PGHEAL_UPSTREAM='postgres://app:secret@db.example:5432/appdb' pgheal
#
# Two ways to configure it:
# - By environment (one database; every flag has a PGHEAL_* variable, see `pgheal --help`):
#   with no command given, the image's CMD listens on 0.0.0.0:6432 for clients and serves
#   /metrics, /healthz and /readyz on 0.0.0.0:9930.
# - By a mounted file, given as the command: `docker run ... pgheal /etc/pgheal/pgbouncer.ini`
#   (or pgheal.toml). The command replaces the CMD, so nothing of the image overrides the file:
#   its listen_addr/listen_port are used as written. Add `--metrics-listen 0.0.0.0:9930` before
#   the file (or `metrics_listen` in a TOML file) for the metrics and health endpoints.
# The image sets no PGHEAL_* variable: a variable always wins over the file, so one set by the
# image would silently override a mounted configuration.
#
# TLS: mount certificates and set PGHEAL_CLIENT_TLS_SSLMODE=require,
# PGHEAL_CLIENT_TLS_CERT_FILE and PGHEAL_CLIENT_TLS_KEY_FILE (the key owned by uid 6432, mode
# 0600), and `?sslmode=verify-full&sslrootcert=...` in PGHEAL_UPSTREAM; docker-compose.yml
# shows both. With PGHEAL_UPSTREAM, clients log in to pgheal with the same user name and
# password.

# --- build -----------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build directory between builds (BuildKit); the
# binary is copied out of the mounted target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --bin pgheal \
    && install -D -m 0755 target/dist/pgheal /out/pgheal

# --- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 6432 pgheal \
    && useradd --system --uid 6432 --gid pgheal --home-dir /nonexistent --shell /usr/sbin/nologin pgheal
# The binary is built with the `dist` profile: stripped, no debug information.
COPY --from=builder /out/pgheal /usr/local/bin/pgheal

# Logs go to stderr; PGHEAL_LOG=debug for more, PGHEAL_LOG_FORMAT=json for JSON lines. Event
# loops default to the CPUs the container may use (its CPU limit included); PGHEAL_THREADS sets
# them. pgheal writes no file of its own, so the root filesystem may be read-only.

# A numeric user (6432, the port), so Kubernetes' runAsNonRoot can check it and a mounted
# private key can be given to it (chown 6432, mode 0600): see deploy/make-certs.sh.
USER 6432:6432
# 6432: PostgreSQL clients. 9930: Prometheus metrics (GET /metrics), /healthz and /readyz
# (not 9187, postgres_exporter's port, which often runs beside a pooler).
EXPOSE 6432 9930
# pgheal stops accepting on SIGTERM and lets sessions finish for up to PGHEAL_SHUTDOWN_TIMEOUT
# (default 30 s): give `docker stop` at least that long (docker stop -t 35).
STOPSIGNAL SIGTERM
# Is pgheal ready for clients? `pgheal healthcheck` asks GET /readyz on the metrics listener
# (127.0.0.1:9930 unless PGHEAL_METRICS_LISTEN says otherwise): listening, not paused or
# shutting down, every configured database reachable (`--allow-down NAME` for one allowed to
# be down; `--live` asks /healthz only).
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
    CMD ["pgheal", "healthcheck", "--timeout", "3"]
ENTRYPOINT ["pgheal"]
# Used only when no command is given (configuration by environment): see the top of this file.
CMD ["--listen", "0.0.0.0:6432", "--metrics-listen", "0.0.0.0:9930"]
