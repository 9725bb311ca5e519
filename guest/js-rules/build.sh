#!/usr/bin/env bash
# Builds the JavaScript rules (rules.js) into a WebAssembly component,
# guest/dist/js_rules.wasm (or the path given as $1), with componentize-js.
#
# npm packages (package.json, exact versions in package-lock.json) are installed
# once into $SESSIONIZE_CACHE/js-rules-node (default ~/.cache/sessionize) and
# reused while the lock file is unchanged. componentize-js needs Node >= 20:
# without one, this fetches Node from npm's node-linux-<arch> package (and, if
# npm itself is missing, Debian's npm first).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${SESSIONIZE_CACHE:-$HOME/.cache/sessionize}"
DEPS="$CACHE/js-rules-node"
OUT="${1:-$ROOT/guest/dist/js_rules.wasm}"
NODE_MIN=20
NODE_PKG=22.23.5 # version of npm's node-linux-<arch>, used only as a fallback

node_ok() { command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge "$NODE_MIN" ]; }

mkdir -p "$DEPS"
[ -x "$DEPS/node/bin/node" ] && export PATH="$DEPS/node/bin:$PATH"
if ! node_ok; then
    if ! command -v npm >/dev/null; then
        echo "js-rules: installing Debian's npm (to fetch Node >= $NODE_MIN)"
        SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq npm >/dev/null
    fi
    case "$(uname -m)" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) arch="$(uname -m)" ;; esac
    echo "js-rules: fetching Node $NODE_PKG from npm (node-linux-$arch) into $DEPS/node"
    rm -rf "$DEPS/node-pkg" "$DEPS/node"
    npm install --prefix "$DEPS/node-pkg" --no-save --no-audit --no-fund --loglevel=error \
        "node-linux-$arch@$NODE_PKG"
    mv "$DEPS/node-pkg/node_modules/node-linux-$arch" "$DEPS/node" && rm -rf "$DEPS/node-pkg"
    export PATH="$DEPS/node/bin:$PATH"
    node_ok || { echo "js-rules: no usable Node >= $NODE_MIN" >&2; exit 1; }
fi

# Install (npm ci: exactly the lock file) only when the manifests changed.
# package.json names @bytecodealliance/preview2-shim itself: componentize-js
# imports it without declaring it, and `npm ci` would leave it out.
STAMP="$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -c1-16)"
if [ "$(cat "$DEPS/stamp" 2>/dev/null)" != "$STAMP" ] || [ ! -d "$DEPS/node_modules" ]; then
    echo "js-rules: installing npm packages into $DEPS (Node $(node --version))"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$DEPS/"
    rm -f "$DEPS/stamp"
    (cd "$DEPS" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$STAMP" >"$DEPS/stamp"
fi

# All of componentize-js's WASI features are disabled: the component imports
# only sessionize:plugin/host, so it is pure and deterministic (no console,
# clock or randomness; rules.js reports errors as strings and logs via `log`).
mkdir -p "$(dirname "$OUT")"
echo "js-rules: componentize-js $(node -p "require('$DEPS/node_modules/@bytecodealliance/componentize-js/package.json').version") -> $OUT"
cd "$HERE"
node "$DEPS/node_modules/@bytecodealliance/componentize-js/src/cli.js" rules.js \
    --wit "$ROOT/wit" --world-name session-rules \
    --disable stdio random clocks http fetch-event \
    --out "$OUT"
[ -s "$OUT" ] || { echo "js-rules: componentize-js wrote no $OUT" >&2; exit 1; }
ls -l "$OUT"
