# syntax=docker/dockerfile:1
# Build: docker build -t authgate .
# Run:   docker run -p 8443:8443 -v $PWD/config:/etc/authgate authgate serve --config /etc/authgate/authgate.toml
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin authgate && strip target/release/authgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/authgate /usr/local/bin/authgate
USER nonroot:nonroot
EXPOSE 8443 9901
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["serve", "--config", "/etc/authgate/authgate.toml"]
