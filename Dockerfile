# syntax=docker/dockerfile:1
#
# pgheal container image.
#
#   docker build -t pgheal .
#   docker run --rm -p 6432:6432 -p 9187:9187 \
#     -e PGHEAL_UPSTREAM='postgres://app:secret@db.example:5432/appdb' pgheal
#
# Configured by environment variables (every flag has one, see `pgheal --help` and
# config/pgheal.toml). TLS: mount certificates and set PGHEAL_CLIENT_TLS_SSLMODE=require,
# PGHEAL_CLIENT_TLS_CERT_FILE and PGHEAL_CLIENT_TLS_KEY_FILE (the key owned by uid 6432, mode
# 0600), and `?sslmode=verify-full&sslrootcert=...` in PGHEAL_UPSTREAM; docker-compose.yml
# shows both. PGHEAL_UPSTREAM is expected from you; clients then log in to pgheal with
# the same user name and password. For several databases or users, mount a configuration file
# and set PGHEAL_CONFIG=/etc/pgheal/pgheal.toml.

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
COPY --from=builder /out/pgheal /usr/local/bin/pgheal

ENV PGHEAL_LISTEN=0.0.0.0:6432 \
    PGHEAL_METRICS_LISTEN=0.0.0.0:9187
# Expected from the user: PGHEAL_UPSTREAM=postgres://user:password@host:port/dbname
# (or PGHEAL_CONFIG pointing at a mounted file). Logs go to stderr; PGHEAL_LOG=debug for more,
# PGHEAL_LOG_FORMAT=json for JSON lines. Event loops default to the CPUs the container may use
# (its CPU limit included); PGHEAL_THREADS sets them.

# A fixed user id (6432, the port), so a mounted private key can be given to it (chown 6432,
# mode 0600): see deploy/make-certs.sh and docker-compose.yml.
USER pgheal
# 6432: PostgreSQL clients. 9187: Prometheus metrics (GET /metrics), /healthz and /readyz.
EXPOSE 6432 9187
# pgheal stops accepting on SIGTERM and lets sessions finish for up to PGHEAL_SHUTDOWN_TIMEOUT
# (default 30 s): give `docker stop` at least that long (docker stop -t 35).
STOPSIGNAL SIGTERM
# Is pgheal ready for clients? `pgheal healthcheck` asks GET /readyz on the metrics listener
# (PGHEAL_METRICS_LISTEN): listening, not paused or shutting down, every configured database
# reachable (`--allow-down NAME` for one allowed to be down; `--live` asks /healthz only).
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
    CMD ["pgheal", "healthcheck", "--timeout", "3"]
ENTRYPOINT ["pgheal"]
