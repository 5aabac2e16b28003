# syntax=docker/dockerfile:1
#
# tally — one image for `tally serve`, `tally worker` and `tally migrate`.
#
#   docker build -t tally:dev .          (or: make docker-build)
#   docker run --rm tally:dev --help
#   docker run --rm -e DATABASE_URL=... tally:dev migrate up
#
# Stage 1 (builder) compiles the dependencies first, against a dummy main, in a layer of its own:
# it is rebuilt only when Cargo.toml, Cargo.lock, build.rs, proto/ or vendor/ (a patched
# dependency, see vendor/README.md) change, so editing src/ recompiles just the tally crate.
# build.rs compiles proto/ with protox (pure Rust), so no system protoc is needed. Stage 2
# (runtime) is Debian slim with CA certificates and the binary, running as a numeric non-root
# user.

ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_SUITE} AS builder
WORKDIR /build

# 1. Dependencies (and the generated protobuf code), cached as long as these inputs don't change.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY vendor ./vendor
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked \
 && rm -rf src

# 2. The application. migrations/ is embedded in the binary (sqlx::migrate!), so it is an input.
COPY src ./src
COPY migrations ./migrations
# COPY keeps the files' own mtimes, which may be older than the dummy build: make sure cargo
# rebuilds the tally crate itself (and only it) instead of reusing the dummy's artefacts.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/tally /out/tally \
 && /out/tally --version

FROM debian:${DEBIAN_SUITE}-slim AS runtime
# Only CA certificates on top of the base (for TLS to PostgreSQL, Redis, SMTP and the OTLP
# collector). The base's bash is what docker-compose.yml's health check uses (/dev/tcp);
# Kubernetes probes tally over grpc.health.v1 natively and needs nothing in the image.
# ca-certificates is left unpinned on purpose: it should track the suite's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY --from=builder /out/tally /usr/local/bin/tally

# A numeric uid/gid, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /tmp
ENV TALLY_LISTEN_ADDR=0.0.0.0:8080 \
    RUST_LOG=info,sqlx=warn
EXPOSE 8080

ENTRYPOINT ["tally"]
CMD ["serve"]
