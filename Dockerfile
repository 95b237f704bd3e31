# syntax=docker/dockerfile:1
# Build: docker build -t authgate .
# Run:   docker run -p 8443:8443 -e AUTHGATE_UPSTREAM=http://app:8080 \
#          -v $PWD/keys:/etc/authgate/keys:ro -v $PWD/users:/etc/authgate/users:ro authgate
#        (the default config, deploy/image/authgate.toml, names a signing key and a users
#        file to mount; the image writes nothing and runs with a read-only root)
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir -p src examples \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > examples/argon2_throughput.rs \
 && cargo build --release --locked --bin authgate \
 && rm -rf src examples
COPY src ./src
COPY examples ./examples
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin authgate \
 && strip target/release/authgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/authgate /usr/local/bin/authgate
COPY deploy/image/authgate.toml /etc/authgate/authgate.toml
# Numeric: a kubelet verifies runAsNonRoot only against a numeric user.
USER 65532:65532
EXPOSE 8443 9901
# distroless has no shell: the binary probes its own admin listener.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD ["/usr/local/bin/authgate", "healthcheck", "--config", "/etc/authgate/authgate.toml"]
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["serve", "--config", "/etc/authgate/authgate.toml"]
