#!/usr/bin/env bash
# The lakehouse benchmark (tests/bench/lakehouse.py) with the release binary.
# Uses what tests/run.sh installs into ~/.cache/sessionize (run it once first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${SESSIONIZE_CACHE:-$HOME/.cache/sessionize}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cd "$ROOT"
cargo build --release --locked -p sessionize
export TANSU_BIN="$CACHE/tansu/bin/tansu" S3S_BIN="$CACHE/s3s/bin/s3s-fs"
exec "$CACHE/venv/bin/python" tests/bench/lakehouse.py \
    --binary "$CARGO_TARGET_DIR/release/sessionize" "$@"
