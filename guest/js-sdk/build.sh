#!/usr/bin/env bash
# Builds a JavaScript rules plugin into a WebAssembly component with
# componentize-js: `build.sh SOURCE.js OUT.wasm`. esbuild first bundles the
# source with what it imports (the SDK, sessionize.js beside this script, and
# any other module by path) into one file, since componentize-js loads
# modules only from the source's own directory.
#
# All of componentize-js's WASI features are disabled: the component imports
# only sessionize:plugin/host, so it is pure and deterministic (no console,
# clock or randomness; the SDK reports errors as strings, and `log` from
# 'sessionize:plugin/host@0.2.0' writes to the job's log).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 SOURCE.js OUT.wasm" >&2; exit 2; }
SRC="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
OUT="$2"
# shellcheck source=node.sh
. "$(dirname "${BASH_SOURCE[0]}")/node.sh"
WIT="$JS_SDK/../../wit"
mkdir -p "$(dirname "$OUT")"
OUT="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
BUNDLE="$(mktemp -d)"
trap 'rm -rf "$BUNDLE"' EXIT
# The contract's imports stay imports: componentize-js binds them.
"$JS_DEPS/node_modules/.bin/esbuild" "$SRC" --bundle --format=esm --platform=neutral \
    --external:'sessionize:*' --log-level=warning --outfile="$BUNDLE/rules.js"
echo "js-sdk: componentize-js $(node -p "require('$JS_DEPS/node_modules/@bytecodealliance/componentize-js/package.json').version") $SRC -> $OUT"
cd "$BUNDLE"
node "$JS_DEPS/node_modules/@bytecodealliance/componentize-js/src/cli.js" rules.js \
    --wit "$WIT" --world-name session-rules \
    --disable stdio random clocks http fetch-event \
    --out "$OUT"
[ -s "$OUT" ] || { echo "js-sdk: componentize-js wrote no $OUT" >&2; exit 1; }
ls -l "$OUT"
