# syntax=docker/dockerfile:1.7
# Multi-stage build of the `till` binary.
#   docker build -t till:dev .
# Stage `build` compiles with BuildKit cache mounts for the cargo registry and the target
# folder, so a rebuild after a code change reuses every compiled dependency (the GraphiQL
# assets are vendored in the source: no Node.js).
# Stage `runtime` is distroless: the binary, libc and CA certificates, no shell, user
# 65532.
#
# The base images are build arguments, pinned by digest for production. Where no
# registry is reachable, package a binary built outside (it must be built on Debian 12,
# the runtime's libc) on a locally made base, as scripts/image-test.sh does:
#   docker build --target runtime --build-arg BINARY=prebuilt \
#     --build-arg RUNTIME_IMAGE=<local base> -f Dockerfile <folder holding `till`>
ARG BUILD_IMAGE=rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
# Which stage supplies /out/till: `build` (compile here) or `prebuilt` (the context's
# `till` file).
ARG BINARY=build

# checkov:skip=CKV_DOCKER_7:the base images are build arguments whose defaults are pinned by digest (above)
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p till-api \
 && install -D -m 0755 target/release/till /out/till

FROM scratch AS prebuilt
COPY till /out/till

# hadolint ignore=DL3006
FROM ${BINARY} AS binary

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=binary /out/till /till
USER 65532:65532
ENV TILL_LISTEN=0.0.0.0:8080 \
    TILL_MODE=production \
    RUST_LOG=info \
    RUST_LOG_FORMAT=json
EXPOSE 8080 9090
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s CMD ["/till", "healthcheck"]
ENTRYPOINT ["/till"]
CMD ["serve"]
