#!/usr/bin/env bash
# Runs one of the benchmarks here with the release binary:
#   tests/bench/run.sh lakehouse [ARGS]    (tests/bench/lakehouse.py)
#   tests/bench/run.sh scale_out [ARGS]    (tests/bench/scale_out.py)
# Uses the servers tests/run.sh installs into ~/.cache/sessionize (run it once first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${SESSIONIZE_CACHE:-$HOME/.cache/sessionize}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="${1:-}"
if [ ! -f "$ROOT/tests/bench/$BENCH.py" ]; then
    echo "usage: tests/bench/run.sh lakehouse|scale_out [ARGS]: name one of tests/bench/*.py" >&2
    exit 2
fi
shift
cd "$ROOT"
cargo build --release --locked -p sessionize
export TANSU_BIN="$CACHE/tansu/bin/tansu" NISSHI_BIN="$CACHE/nisshi/bin/nisshi" \
    S3S_BIN="$CACHE/s3s/bin/s3s-fs"
exec "$CACHE/venv/bin/python" "tests/bench/$BENCH.py" \
    --binary "$CARGO_TARGET_DIR/release/sessionize" "$@"
