import os
import signal
import subprocess
from pathlib import Path

import pytest
from pyiceberg.catalog.sql import SqlCatalog

ROOT = Path(__file__).resolve().parents[2]


def _children() -> dict:
    """Every process on this machine, by pid, with its parent's pid."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # pid (comm) state ppid ...; comm may hold spaces and parentheses.
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return parents


def _descendants(root: int) -> set:
    parents = _children()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """Kills every process a test started (jobs, brokers, steps) once it ends,
    passed or failed, so that a failed test leaves nothing running into the next."""
    before = _descendants(os.getpid())
    yield
    for pid in _descendants(os.getpid()) - before:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="session")
def binary() -> Path:
    path = Path(os.environ.get("SESSIONIZE_BIN", ROOT / "target" / "release" / "sessionize"))
    assert path.exists(), f"{path} missing: tests/run.sh builds it"
    return path


@pytest.fixture
def run(binary):
    """Runs the binary; returns the completed process (output captured)."""

    def _run(*args, stdin=None, check=True, env=None):
        args = [str(a) for a in args]
        if args[:1] == ["run"] and "--kafka-servers" in args and "--metrics-addr" not in args:
            # Not the default 127.0.0.1:9464: it may be taken on this machine.
            args += ["--metrics-addr", "127.0.0.1:0"]
        proc = subprocess.run(
            [str(binary), *map(str, args)],
            input=stdin, capture_output=True, timeout=600, env=env,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"sessionize {args} failed:\n{proc.stderr.decode()}")
        return proc

    return _run


# Debian's libfaketime (tests/run.sh installs the faketime package).
FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def clock_shifted(env: dict, shift: str) -> dict:
    """`env` with the wall clock moved by `shift` ("+2h", "+4d"; monotonic time
    untouched) for the processes started with it."""
    assert FAKETIME.exists(), f"{FAKETIME} is missing: tests/run.sh installs Debian's faketime package"
    return dict(env, LD_PRELOAD=str(FAKETIME), FAKETIME=shift, DONT_FAKE_MONOTONIC="1")


def catalog(warehouse: Path) -> SqlCatalog:
    """The table as any pyiceberg user would open it: no extra setup."""
    return SqlCatalog(
        "sessionize",
        uri=f"sqlite:///{warehouse}/catalog.db",
        warehouse=f"file://{warehouse}",
    )


# The session columns the tests compare (all but rule_version).
SESSION_COLUMNS = [
    "uuid", "session_id", "session_start_time_ms", "session_end_time_ms",
    "session_duration_seconds", "event_count", "pages_visited", "session_date",
    "user_hash_bucket", "end_reason",
]


def read_table(warehouse: Path, name: str = "sessions.user_sessions") -> list:
    """Every row of a table, as dicts."""
    return catalog(warehouse).load_table(name).scan().to_arrow().to_pylist()


@pytest.fixture(scope="session")
def object_store(tmp_path_factory):
    """An S3-compatible server (s3s-fs) for the whole test session."""
    from lakehouse import ObjectStore
    store = ObjectStore(tmp_path_factory.mktemp("s3") / "root")
    yield store
    store.stop()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the whole test session."""
    from lakehouse import Postgres
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture
def lakehouse(object_store, postgres):
    """A fresh bucket and catalog database for one test."""
    from lakehouse import Lakehouse
    return Lakehouse(object_store, postgres)
