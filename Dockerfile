# syntax=docker/dockerfile:1
# Build: docker build -t authgate .
# Run:   docker run -p 8443:8443 -v $PWD/config:/etc/authgate:ro authgate
#        (the config, keys and users file mounted read-only; the image writes nothing)
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
# Numeric: a kubelet verifies runAsNonRoot only against a numeric user.
USER 65532:65532
EXPOSE 8443 9901
# distroless has no shell: the binary probes its own admin listener.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD ["/usr/local/bin/authgate", "healthcheck", "--config", "/etc/authgate/authgate.toml"]
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["serve", "--config", "/etc/authgate/authgate.toml"]
