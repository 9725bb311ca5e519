#!/usr/bin/env bash
# Builds every rules plugin in guest/ as a WebAssembly component into guest/dist/.
# `guest/build.sh DIR` builds the plugin crate in DIR instead (one that
# `sessionize plugin new` made, with a workspace of its own) into DIR/<name>.wasm.
#
# With a wasm32-wasip2 target installed (rustup target add wasm32-wasip2) this is a
# plain cargo build. Without one (no downloadable target, as on our CI machines) it
# fetches Debian's rustc-web (which ships LLVM with every wasm target and the
# library source) into a private cache, builds std from source for
# wasm32-unknown-unknown, and turns the core modules into components.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SESSIONIZE_CACHE:-$HOME/.cache/sessionize}"
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

TOOLCHAIN="$CACHE/wasm-toolchain"
if [ ! -x "$TOOLCHAIN/root/usr/bin/rustc" ]; then
    echo "guest: fetching Debian's rustc-web into $TOOLCHAIN (no wasm target installed)"
    rm -rf "$TOOLCHAIN" && mkdir -p "$TOOLCHAIN/debs" "$TOOLCHAIN/root"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
    (cd "$TOOLCHAIN/debs" && apt-get download -qq rustc-web libstd-rust-web-1.96 \
        libstd-rust-web-dev rust-web-src libllvm22 lld-22 2>&1 | grep -v unsandboxed || true)
    for f in "$TOOLCHAIN"/debs/*.deb; do dpkg -x "$f" "$TOOLCHAIN/root"; done
fi
export LD_LIBRARY_PATH="$TOOLCHAIN/root/usr/lib/x86_64-linux-gnu:$TOOLCHAIN/root/usr/lib/llvm-22/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
WASM_LD="$TOOLCHAIN/root/usr/lib/llvm-22/bin/wasm-ld"
[ -x "$WASM_LD" ] || { echo "guest: $WASM_LD missing; remove $TOOLCHAIN and retry" >&2; exit 1; }

# A separate target dir: the guest is built by another rustc than the host.
GUEST_TARGET="${GUEST_TARGET_DIR:-$TARGET/guest-wasm}"
echo "guest: building components with $("$TOOLCHAIN/root/usr/bin/rustc" --version)"
RUSTC="$TOOLCHAIN/root/usr/bin/rustc" RUSTC_BOOTSTRAP=1 \
    RUSTFLAGS="-C linker=$WASM_LD" CARGO_TARGET_DIR="$GUEST_TARGET" \
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
