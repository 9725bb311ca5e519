#!/usr/bin/env bash
# Builds the job's image from deploy/Dockerfile with podman:
#   deploy/image.sh [TAG]                  (default localhost/sessionize:latest)
# Where the Dockerfile's base images cannot be pulled (no image registry
# reachable), it makes them here first and builds on those:
#   - localhost/debian:bookworm-slim: Debian 12 from debootstrap (Debian's
#     archive is the one source it needs);
#   - localhost/sessionize-build:bookworm: that, with Debian's Rust (rustc-web
#     and cargo-web from bookworm-security, 1.96).
# The local build image also trusts the certificate authorities the host adds
# (/usr/local/share/ca-certificates), so crates.io is reached through a proxy
# the host trusts.
# Extra flags for `podman build` go in PODMAN_BUILD_FLAGS; a host with cgroups
# in hybrid mode needs runc (docs/operating.md gives its containers.conf).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${1:-localhost/sessionize:latest}"
BASE=localhost/debian:bookworm-slim
BUILDER=localhost/sessionize-build:bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
read -r -a EXTRA <<< "${PODMAN_BUILD_FLAGS:-}"

say() { echo "image: $*" >&2; }

pullable() { timeout 60 podman pull -q "$1" >/dev/null 2>&1; }

local_base() {
    podman image exists "$BASE" && return
    command -v debootstrap >/dev/null ||
        { say "no registry and no debootstrap: apt-get install debootstrap"; exit 1; }
    local rootfs
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' RETURN
    say "making $BASE with debootstrap (about a minute)"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >/dev/null
    tar -C "$rootfs" -c . | podman import -q - "$BASE" >/dev/null
}

local_builder() {
    podman image exists "$BUILDER" && return
    say "making $BUILDER: $BASE with Debian's rustc-web and cargo-web"
    local context
    context="$(mktemp -d)"
    trap 'rm -rf "$context"' RETURN
    mkdir "$context/ca"
    cp /usr/local/share/ca-certificates/*.crt "$context/ca/" 2>/dev/null || true
    podman build "${EXTRA[@]}" -t "$BUILDER" -f - "$context" <<EOF
FROM $BASE
COPY ca/ /usr/local/share/ca-certificates/
RUN echo 'deb http://deb.debian.org/debian-security bookworm-security main' \\
        > /etc/apt/sources.list.d/security.list \\
    && apt-get update \\
    && apt-get install -y --no-install-recommends rustc-web cargo-web ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
EOF
}

args=()
if ! pullable docker.io/library/rust:1.95-slim-bookworm ||
    ! pullable docker.io/library/debian:bookworm-slim; then
    say "no image registry reachable: making the base images locally"
    local_base
    local_builder
    args=(--build-arg "BUILD_IMAGE=$BUILDER" --build-arg "RUNTIME_IMAGE=$BASE")
fi
# --format docker keeps HEALTHCHECK (the OCI format has no such field).
podman build "${EXTRA[@]}" --format docker "${args[@]}" -f "$ROOT/deploy/Dockerfile" \
    -t "$TAG" "$ROOT"
say "built $TAG"
