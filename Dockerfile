# syntax=docker/dockerfile:1.7
# Multi-stage build of the `till` binary.
#   docker build -t till:dev .
# Stage 1 compiles with BuildKit cache mounts for the cargo registry and the target
# folder, so a rebuild after a code change reuses every compiled dependency. Node.js is
# only needed at build time (build.rs stages the self-hosted GraphiQL assets from npm).
# Stage 2 is distroless: the binary, libc and CA certificates, no shell, user 65532.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs=18.* npm=9.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p till-api \
 && install -D -m 0755 target/release/till /out/till

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/till /till
USER 65532:65532
ENV TILL_LISTEN=0.0.0.0:8080 \
    TILL_MODE=production \
    RUST_LOG=info \
    RUST_LOG_FORMAT=json
EXPOSE 8080 9090
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s CMD ["/till", "healthcheck"]
ENTRYPOINT ["/till"]
CMD ["serve"]
