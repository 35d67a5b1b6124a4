# polyai-relay image. Build: docker build -t polyai-relay:latest .
# `deploy/check.sh` lints this file and checks that every COPY source exists.

# Build stage: dependencies first, so a source change does not rebuild them.
FROM rust:1-bookworm AS build
WORKDIR /src
# The mount point of the spool's volume, copied into the runtime image below.
RUN mkdir -p /var/lib/polyai-relay
# The workspace's manifests, with an empty file for each target cargo must find to read them:
# every member's root, and the example the service's manifest names.
COPY Cargo.toml Cargo.lock ./
COPY crates/service/Cargo.toml crates/service/
COPY crates/devtools/Cargo.toml crates/devtools/
COPY crates/testkit/Cargo.toml crates/testkit/
RUN mkdir -p src crates/service/src crates/service/examples crates/devtools/src crates/testkit/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch crates/service/src/lib.rs crates/devtools/src/lib.rs crates/testkit/src/lib.rs \
        crates/service/examples/fuzz_verify_and_parse.rs \
    && cargo build --release --locked && rm -rf src crates/*/src crates/service/examples
COPY src ./src
COPY crates ./crates
# Newer than the empty files' build, whatever times COPY kept: each crate is built again.
RUN touch src/main.rs crates/*/src/lib.rs && cargo build --release --locked

# Runtime: glibc and CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/polyai-relay /usr/local/bin/polyai-relay
# The numeric id of distroless's `nonroot`: Kubernetes can only verify runAsNonRoot for a number.
USER 65532:65532
# Owned by that user: a named volume mounted here takes this owner, so the relay can create its
# spool (RELAY_SPOOL_DIR=/var/lib/polyai-relay/spool) inside, owner-only.
COPY --from=build --chown=65532:65532 /var/lib/polyai-relay /var/lib/polyai-relay
# Writable by that user: the embedded queue's ./data when AMQP_URL is unset.
WORKDIR /home/nonroot
# 8080: webhooks (RELAY_LISTEN); 9090: /healthz, /readyz, /metrics (RELAY_ADMIN_LISTEN), not for the internet.
EXPOSE 8080 9090
# GET /readyz on the admin port (no curl in the image). Set RELAY_HEALTHCHECK_URL when
# RELAY_ADMIN_LISTEN moves the port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 CMD ["polyai-relay", "healthcheck"]
ENTRYPOINT ["polyai-relay"]
CMD ["run"]
