#!/usr/bin/env bash
# Runs one of the benchmarks here with the release binary:
#   tests/bench/run.sh lakehouse [ARGS]    (tests/bench/lakehouse.py)
#   tests/bench/run.sh scale_out [ARGS]    (tests/bench/scale_out.py)
#   tests/bench/run.sh peers [ARGS]        (tests/bench/peers.py: beside DuckDB)
#   tests/bench/run.sh restart [ARGS]      (tests/bench/restart.py: start times)
# Uses the servers tests/run.sh installs into ~/.cache/sessionize (run it once first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${SESSIONIZE_CACHE:-$HOME/.cache/sessionize}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="${1:-}"
if [ ! -f "$ROOT/tests/bench/$BENCH.py" ]; then
    echo "usage: tests/bench/run.sh lakehouse|scale_out|peers|restart|soak [ARGS]: name one of tests/bench/*.py" >&2
    exit 2
fi
shift
cd "$ROOT"
cargo build --release --locked -p sessionize
if [ ! -x "$CACHE/tansu/bin/tansu" ]; then
    # Tansu 0.6.0 in memory, the broker the published Kafka figures were
    # measured on (the tests use nisshi): `cargo bench --bench kafka` and
    # `scale_out --broker tansu` use it.
    CARGO_TARGET_DIR="$CACHE/tansu-build" cargo install tansu --version 0.6.0 --locked \
        --features dynostore --root "$CACHE/tansu"
fi
export TANSU_BIN="$CACHE/tansu/bin/tansu" NISSHI_BIN="$CACHE/nisshi/bin/nisshi" \
    S3S_BIN="$CACHE/s3s/bin/s3s-fs"
if [ "$BENCH" = peers ]; then
    # DuckDB in a venv of its own: the peers are not the tests' dependencies.
    PEERS="$CACHE/peers-venv"
    [ -x "$PEERS/bin/python" ] || python3 -m venv "$PEERS"
    "$PEERS/bin/python" -c "import duckdb" 2>/dev/null \
        || "$PEERS/bin/pip" install --quiet "duckdb==2.0.1"
    set -- --duckdb-python "$PEERS/bin/python" "$@"
fi
exec "$CACHE/venv/bin/python" "tests/bench/$BENCH.py" \
    --binary "$CARGO_TARGET_DIR/release/sessionize" "$@"
