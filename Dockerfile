# Build stage: dependencies first, so a source change does not rebuild them.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# Runtime: no shell, no package manager, a non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/polyai-relay /usr/local/bin/polyai-relay
USER nonroot
EXPOSE 8080
ENTRYPOINT ["polyai-relay"]
CMD ["run"]
