#!/usr/bin/env bash
# Builds every rules plugin in guest/ as a WebAssembly component into guest/dist/.
# `guest/build.sh DIR` builds the plugin crate in DIR instead (one that
# `sessionize plugin new` made, with a workspace of its own) into DIR/<name>.wasm.
#
# With a wasm32-wasip2 target installed (rustup target add wasm32-wasip2) this is a
# plain cargo build. Without one (no downloadable target, as on our CI machines) it
# fetches Debian's rustc-web (guest/toolchain.sh) into a private cache, builds std from source for
# wasm32-unknown-unknown, and turns the core modules into components.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIST="$ROOT/guest/dist"
PLUGINS=(default-rules logout-rules conversion-rules faulty chaos)
MANIFEST="$ROOT/Cargo.toml"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ $# -gt 0 ]; then
    CRATE="$(cd "$1" && pwd)"
    MANIFEST="$CRATE/Cargo.toml"
    [ -f "$MANIFEST" ] || { echo "guest: no Cargo.toml in $CRATE" >&2; exit 1; }
    PLUGINS=("$(sed -n 's/^name = "\(.*\)"$/\1/p' "$MANIFEST" | head -n 1)")
    DIST="$CRATE"
    TARGET="${CARGO_TARGET_DIR:-$CRATE/target}"
fi
mkdir -p "$DIST"

if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "guest: building with the installed wasm32-wasip2 target"
    cargo build --manifest-path "$MANIFEST" --profile guest --target wasm32-wasip2 \
        $(printf -- '-p %s ' "${PLUGINS[@]}")
    OUT="$TARGET/wasm32-wasip2/guest"
    for p in "${PLUGINS[@]}"; do cp "$OUT/${p//-/_}.wasm" "$DIST/${p//-/_}.wasm"; done
    exit 0
fi

TOOLCHAIN_ENV="$("$ROOT/guest/toolchain.sh")"
# shellcheck disable=SC1090
. "$TOOLCHAIN_ENV"

# A separate target dir: the guest is built by another rustc than the host.
GUEST_TARGET="${GUEST_TARGET_DIR:-$TARGET/guest-wasm}"
echo "guest: building components with $("$TOOLCHAIN_RUSTC" --version)"
RUSTC="$TOOLCHAIN_RUSTC" RUSTC_BOOTSTRAP=1 \
    RUSTFLAGS="-C linker=$TOOLCHAIN_WASM_LD" CARGO_TARGET_DIR="$GUEST_TARGET" \
    cargo build --manifest-path "$MANIFEST" --profile guest \
    -Zbuild-std=std,panic_abort --target wasm32-unknown-unknown \
    $(printf -- '-p %s ' "${PLUGINS[@]}")

cargo build --quiet --manifest-path "$ROOT/Cargo.toml" --release -p componentize
COMPONENTIZE="${CARGO_TARGET_DIR:-$ROOT/target}/release/componentize"
for p in "${PLUGINS[@]}"; do
    name="${p//-/_}"
    "$COMPONENTIZE" "$GUEST_TARGET/wasm32-unknown-unknown/guest/$name.wasm" "$DIST/$name.wasm"
done
ls -l "$DIST"/*.wasm
