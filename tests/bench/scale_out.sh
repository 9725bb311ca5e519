#!/usr/bin/env bash
# The scale-out benchmark (tests/bench/scale_out.py) with the release binary.
# Uses what tests/run.sh installs into ~/.cache/sessionize (run it once first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${SESSIONIZE_CACHE:-$HOME/.cache/sessionize}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cd "$ROOT"
cargo build --release --locked -p sessionize
export TANSU_BIN="$CACHE/tansu/bin/tansu" NISSHI_BIN="$CACHE/nisshi/bin/nisshi"
exec "$CACHE/venv/bin/python" tests/bench/scale_out.py \
    --binary "$CARGO_TARGET_DIR/release/sessionize" "$@"
