#!/usr/bin/env bash
# Runs every test, from a fresh clone on Debian:
#   installs the system packages the tests need; formatting and lints; the
#   SDK's and plugins' unit tests; the host's unit and integration tests
#   against the components built from guest/; the end-to-end tests that drive
#   the built binary and read the Iceberg tables back with pyiceberg. Installs what it needs (guest toolchain, Python packages) into
#   ~/.cache/sessionize (override with SESSIONIZE_CACHE).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SESSIONIZE_CACHE:-$HOME/.cache/sessionize}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cd "$ROOT"

# Each step says when it started, so a run's log shows where the time went.
step() { printf '\n==> %s (at %dm%02ds)\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }

step "system packages"
# Python for the independent reader, a C toolchain and cmake for librdkafka
# (built from source by the rdkafka crate), PostgreSQL for the shared catalog
# tests (they start their own server on loopback), libfaketime for the tests
# of skewed clocks, and Chromium, the real browser the status page is tested in.
PACKAGES=(python3-venv python3-pip build-essential cmake pkg-config postgresql faketime chromium)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        SUDO=""
    elif sudo -n true 2>/dev/null; then
        SUDO=sudo
    else
        echo "tests/run.sh: missing Debian packages (${missing[*]}); install them as root with" \
            "'apt-get update && apt-get install -y ${PACKAGES[*]}', or run this as root" >&2
        exit 1
    fi
    echo "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "rustc for the guest and for nisshi (Debian's rustc-web, fetched once)"
# Before anything builds in the background: guest/build.sh and the nisshi
# build below both use it, and two fetches at once would race.
TOOLCHAIN_ENV="$(guest/toolchain.sh)"

step "servers for the end-to-end tests: building in the background (log: $CACHE/servers.log)"
# Two crates built from source, the longest steps of a cold run. They build
# beside the guest and the test build, to fill the stretches where those leave
# a core idle (one crate at a time, links); a cold run keeps both cores busy
# 93% of its time this way (tests/README.md).
build_servers() {
    set -euo pipefail
    local t0=$SECONDS nisshi="$CACHE/nisshi" s3s="$CACHE/s3s"
    if [ ! -x "$nisshi/bin/nisshi" ]; then
        # The Kafka-protocol broker of every streaming test (no Apache Kafka
        # package is reachable here). Stored in PostgreSQL, its topics and
        # offsets survive a restart; its group coordinator evicts a frozen
        # member. It needs rustc 1.96, newer than rustup's here: Debian's
        # rustc-web builds it. Memory and PostgreSQL storage only: SQLite
        # (libsql) would double its build. At opt-level 1, not 3: it is the
        # largest build of a cold run (619 crates), and the tests move
        # thousands of records through it, not millions.
        # shellcheck disable=SC1090
        (. "$TOOLCHAIN_ENV" && RUSTC="$TOOLCHAIN_RUSTC" CARGO_TARGET_DIR="$CACHE/nisshi-build" \
            CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install nisshi --version 0.8.1 --locked --no-default-features \
            --features dynostore,postgres --root "$nisshi")
    fi
    echo "servers: nisshi ready after $((SECONDS - t0)) s"
    if [ ! -x "$s3s/bin/s3s-fs" ]; then
        # A real filesystem-backed S3 server from crates.io (MinIO is not
        # reachable here); 0.14.1 is the newest that builds with Rust 1.95.
        # opt-level 1 as for nisshi.
        CARGO_TARGET_DIR="$CACHE/s3s-build" CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install s3s-fs --version 0.14.1 --locked \
            --features binary --root "$s3s"
    fi
    echo "servers: s3s-fs ready after $((SECONDS - t0)) s"
}
mkdir -p "$CACHE"
build_servers > "$CACHE/servers.log" 2>&1 &
SERVERS_PID=$!
# A failed step stops the run; the background build (cargo under a subshell)
# must not outlive it.
kill_tree() {
    local child
    for child in $(pgrep -P "$1"); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
}
trap '[ -z "$SERVERS_PID" ] || kill_tree "$SERVERS_PID"' EXIT
export NISSHI_BIN="$CACHE/nisshi/bin/nisshi" S3S_BIN="$CACHE/s3s/bin/s3s-fs"

step "guest components"
guest/build.sh

step "python test environment"
VENV="$CACHE/venv"
STAMP="$VENV/.requirements.sha256"
# A venv that an interrupted run half made (a python without pip) is made again.
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
if ! sha256sum --status -c "$STAMP" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet -r tests/requirements.txt
    sha256sum tests/requirements.txt > "$STAMP"
fi

step "python rules components (componentize-py): contract 0.1, and 0.2 on the Python SDK"
(cd guest/python-rules && "$VENV/bin/componentize-py" -d ../../wit/v0.1 -w session-rules \
    componentize app -o ../dist/python_rules.wasm)
(cd guest/python-conversion && "$VENV/bin/componentize-py" -d ../../wit -w session-rules \
    componentize app -p . -p ../python-sdk -o ../dist/python_conversion.wasm)
export COMPONENTIZE_PY="$VENV/bin/componentize-py"

step "javascript rules components and SDK tests (componentize-js and node, from npm)"
guest/js-sdk/test.sh guest/js-sdk guest/js-conversion
guest/js-sdk/build.sh guest/js-rules/rules.js guest/dist/js_rules.wasm
guest/js-sdk/build.sh guest/js-conversion/rules.js guest/dist/js_conversion.wasm

# Every cargo step below asks for the same features (the query engine
# included, for its tests) and the same rustc wrapper, so no step rebuilds the
# tree for another: the binary the end-to-end tests drive is the one the test
# build made.
FEATURES=(--workspace --locked --features sessionize/query)
# Clippy's lints run inside the test build, with clippy-driver as the
# workspace's rustc: one compile of every crate serves both, where `cargo
# clippy` would compile every dependency a second time (metadata only) first.
# The lints and `-D warnings` are the same as `cargo clippy --all-targets`'s.
CLIPPY_DRIVER="$(rustup which clippy-driver)"
LINTED=(env RUSTC_WORKSPACE_WRAPPER="$CLIPPY_DRIVER"
    CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")

step "format"
cargo fmt --all --check

step "build with lints (clippy, every target)"
"${LINTED[@]}" cargo test "${FEATURES[@]}" --all-targets --no-run --timings

step "unit and integration tests"
"${LINTED[@]}" cargo test "${FEATURES[@]}"

step "waiting for the servers' background build"
if ! wait "$SERVERS_PID"; then
    tail -n 40 "$CACHE/servers.log" >&2
    echo "tests/run.sh: building the test servers failed (the end of $CACHE/servers.log is above)" >&2
    exit 1
fi
SERVERS_PID=""
grep '^servers:' "$CACHE/servers.log"

step "end-to-end tests (binary + pyiceberg)"
"${LINTED[@]}" cargo build "${FEATURES[@]}" --bin sessionize
# Three at a time (pytest-xdist): most of a test's time is waiting on brokers,
# group rebalances and checkpoint timers; a worker that runs out of tests takes
# some of another's.
SESSIONIZE_BIN="$CARGO_TARGET_DIR/debug/sessionize" \
    "$VENV/bin/python" -m pytest -q -n "${E2E_WORKERS:-3}" --dist worksteal --durations=10 \
    tests/e2e "$@"
