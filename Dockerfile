# One image for every program: a static `http-addon` binary and nothing else.
# The Deployments in deploy/ pick the program with the first argument
# (`interceptor`, `scaler`, `operator`, `cache`).
#
#   docker build -t ghcr.io/example/http-addon:0.1.0 .
#
# .ci/static-image-check proves the premise without a container engine: the
# binary is static and runs (`--help`, `crds`, an interceptor) in an empty root.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# musl-gcc compiles ring's C code for the musl target.
ENV CARGO_INCREMENTAL=0 \
    CC_x86_64_unknown_linux_musl=musl-gcc
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p http-addon \
 && strip -o /http-addon target/x86_64-unknown-linux-musl/release/http-addon

FROM scratch
# Only for https source/upstream URLs verified against public CAs (the cluster's
# own CA comes from the service account mount); the binary needs no file.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /http-addon /http-addon
# Numeric, so runAsNonRoot can verify it without an /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/http-addon"]
