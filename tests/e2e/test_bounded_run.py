"""A bounded run of the built binary, read back with pyiceberg and compared with
an expectation computed independently (reference.py)."""

import gzip
import math
import re

import pytest

from conftest import ROOT, SESSION_COLUMNS, catalog, read_table
from reference import sessionize


def key(row):
    return tuple(row[c] if not isinstance(row[c], list) else tuple(row[c]) for c in SESSION_COLUMNS)


def summary_value(stdout: bytes, label: str) -> int:
    for line in stdout.decode().splitlines():
        if line.strip().startswith(label):
            return int(line.split(":", 1)[1].split()[0])
    raise AssertionError(f"no {label!r} in summary:\n{stdout.decode()}")


@pytest.fixture(scope="module")
def events(tmp_path_factory, binary):
    import subprocess
    path = tmp_path_factory.mktemp("input") / "events.jsonl"
    subprocess.run(
        [str(binary), "generate", "--num-users", "1000", "--rate", "4", "--duration", "10h",
         "--seed", "7", "--malformed-rate", "0.002", "--output", str(path)],
        check=True,
    )
    return path


# One engine, and the users split over three (each times every event): the same
# expectation either way.
@pytest.mark.parametrize("engines", [[], ["--engines", "3"]], ids=["default", "three-engines"])
def test_table_matches_the_independent_expectation(run, events, tmp_path, engines):
    warehouse = tmp_path / "wh"
    proc = run("run", "--input", events, "--warehouse", warehouse, *engines)
    expected = sessionize(events.read_text().splitlines())
    got = read_table(warehouse)

    assert len(expected.sessions) > 2000
    assert sorted(map(key, got)) == sorted(map(key, expected.sessions))
    reasons = {r["end_reason"] for r in got}
    assert {"inactivity", "max_duration", "end_of_input"} <= reasons
    assert all(r["rule_version"].startswith("default-rules@0.1.0+") for r in got)
    assert all(math.isclose(r["session_duration_seconds"],
                            (r["session_end_time_ms"] - r["session_start_time_ms"]) / 1000)
               for r in got)

    # The summary's counters agree with the expectation.
    out = proc.stdout
    assert summary_value(out, "accepted") == expected.accepted
    assert summary_value(out, "late") == expected.late
    assert summary_value(out, "duplicate") == expected.duplicates
    assert summary_value(out, "rejected") == expected.rejected
    assert summary_value(out, "sessions written") == len(expected.sessions)
    assert expected.late > 0 and expected.duplicates > 0 and expected.rejected > 0

    # Every rejected and late record is in the dead-letter table, with a reason.
    dead = read_table(warehouse, "sessions.rejected_events")
    assert len(dead) == expected.rejected + expected.late
    assert sum(r["reason"].startswith("late") for r in dead) == expected.late
    assert all(r["raw"] and r["reason"] and r["position"] > 0 for r in dead)


def test_partitioning_and_snapshot_properties(run, events, tmp_path):
    warehouse = tmp_path / "wh"
    run("run", "--input", events, "--warehouse", warehouse)
    table = catalog(warehouse).load_table("sessions.user_sessions")
    assert table.format_version == 2
    fields = [(f.name, str(f.transform)) for f in table.spec().fields]
    assert fields == [("session_date", "identity"), ("user_hash_bucket_trunc", "truncate[10]")]
    snapshot = table.current_snapshot()
    assert snapshot.summary["sessionize.rule-version"].startswith("default-rules@")
    # A filter on the bucket prunes files through the truncate transform.
    all_files = list(table.scan().plan_files())
    pruned = list(table.scan(row_filter="user_hash_bucket == 42").plan_files())
    assert 0 < len(pruned) < len(all_files)
    assert all(r["user_hash_bucket"] == 42
               for r in table.scan(row_filter="user_hash_bucket == 42").to_arrow().to_pylist())
    for task in all_files:
        assert task.file.file_path.endswith(".parquet")


def test_same_input_gives_the_same_ids_gzip_and_stdin_too(run, events, tmp_path):
    run("run", "--input", events, "--warehouse", tmp_path / "a")
    gz = tmp_path / "events.jsonl.gz"
    gz.write_bytes(gzip.compress(events.read_bytes()))
    run("run", "--input", gz, "--warehouse", tmp_path / "b")
    run("run", "--input", "-", "--warehouse", tmp_path / "c", stdin=events.read_bytes())
    a, b, c = (sorted(map(key, read_table(tmp_path / w))) for w in "abc")
    assert a == b == c


def test_configured_timeouts_are_passed_to_the_rules(run, events, tmp_path):
    warehouse = tmp_path / "wh"
    run("run", "--input", events, "--warehouse", warehouse,
        "--inactivity-timeout", "45m", "--max-session-duration", "90m", "--allowed-lateness", "5")
    expected = sessionize(events.read_text().splitlines(), inactivity_ms=45 * 60_000,
                          max_duration_ms=90 * 60_000, lateness_ms=5 * 60_000)
    assert sorted(map(key, read_table(warehouse))) == sorted(map(key, expected.sessions))


def test_test_mode_runs_on_embedded_defaults(run, tmp_path):
    proc = run("run", "--test-mode", "--warehouse", tmp_path / "wh")
    assert summary_value(proc.stdout, "sessions written") > 1000
    assert len(read_table(tmp_path / "wh")) == summary_value(proc.stdout, "sessions written")


@pytest.mark.parametrize("args, message", [
    (["run", "--test-mode", "--inactivity-timeout", "soon"], "like 45m"),
    (["run", "--test-mode", "--max-session-duration", "0"], "greater than zero"),
    (["run", "--input", "/nonexistent/events.jsonl"], "cannot read /nonexistent/events.jsonl"),
    (["run", "--test-mode", "--plugin", "/nonexistent.wasm"], "cannot read plugin"),
    (["run", "--test-mode", "--log-level", "loud"], "possible values"),
    (["run", "--test-mode", "--engines", "0"], "1..=256"),
    (["run", "--kafka-servers", "127.0.0.1:9", "--engines", "2"], "drop --engines"),
])
def test_bad_flags_exit_non_zero_with_a_sentence(run, tmp_path, args, message):
    proc = run(*args, "--warehouse", tmp_path / "wh", check=False)
    assert proc.returncode != 0
    assert message in proc.stderr.decode(), proc.stderr.decode()


def test_a_file_that_is_not_a_component_is_refused(run, tmp_path):
    bogus = tmp_path / "rules.wasm"
    bogus.write_bytes(b"\0asm\x01\0\0\0")
    proc = run("run", "--test-mode", "--plugin", bogus, "--warehouse", tmp_path / "wh", check=False)
    assert proc.returncode != 0
    assert "not a Sessionize rules component" in proc.stderr.decode()


def test_a_python_component_that_imports_wasi_cuts_the_same_sessions(run, events, tmp_path):
    """guest/python-rules (componentize-py: a WASI component with CPython inside)."""
    plugin = ROOT / "guest" / "dist" / "python_rules.wasm"
    assert plugin.exists(), "tests/run.sh builds it"
    warehouse = tmp_path / "wh"
    first = run("run", "--input", events, "--warehouse", warehouse, "--plugin", plugin,
                "--plugin-memory-mib", "256")
    got = read_table(warehouse)
    expected = sessionize(events.read_text().splitlines())
    assert sorted(map(key, got)) == sorted(map(key, expected.sessions))
    assert {r["rule_version"].split("+")[0] for r in got} == {"python-rules@0.1.0"}

    # The plugin's stdout and stderr reach the host log under its name; its
    # clock is frozen at the epoch and its randomness is the same every run.
    log = first.stderr.decode()
    printed = [line for line in log.splitlines() if "configured: clock reads" in line]
    assert printed and all("python-rules@0.1.0" in line for line in printed), log
    assert "clock reads 0.0," in printed[0]
    assert any("stderr reaches the host log too" in line and "stderr" in line
               for line in log.splitlines()), log
    again = run("run", "--input", events, "--warehouse", tmp_path / "wh2", "--plugin", plugin,
                "--plugin-memory-mib", "256").stderr.decode()
    random_bytes = lambda text: re.findall(r"random bytes ([0-9a-f]+)", text)
    assert random_bytes(log) and random_bytes(again) == random_bytes(log)


def test_a_bounded_run_keeps_the_compiled_rules_for_the_next_run(run, events, tmp_path):
    """An hourly bounded run compiles a component once: it is kept in the
    user's cache (SESSIONIZE_CACHE/compiled), checked before it is used, and
    a damaged entry is compiled again, not trusted."""
    import os
    cache = tmp_path / "cache"
    env = dict(os.environ, SESSIONIZE_CACHE=str(cache))
    plugin = ROOT / "guest" / "dist" / "conversion_rules.wasm"

    def bounded(name):
        return run("run", "--input", events, "--warehouse", tmp_path / name, "--plugin", plugin,
                   env=env)

    first = bounded("first")
    kept = list((cache / "compiled").glob("*.cwasm"))
    assert len(kept) == 1, kept
    assert kept[0].stat().st_mode & 0o022 == 0  # writable by its user alone
    entry = kept[0].read_bytes()
    kept[0].write_bytes(entry[:-100] + bytes(100))
    damaged = bounded("damaged")
    assert "compiled component damaged; compiling again" in damaged.stderr.decode()
    assert kept[0].read_bytes() == entry  # compiled again, and kept again
    again = bounded("again")
    assert "compiling again" not in again.stderr.decode()
    for proc, name in ((first, "first"), (damaged, "damaged"), (again, "again")):
        assert b"sessions written" in proc.stdout, name
    rows = [sorted(r["session_id"] for r in read_table(tmp_path / name))
            for name in ("first", "damaged", "again")]
    assert rows[0] == rows[1] == rows[2] and rows[0]
