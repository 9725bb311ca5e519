"""Table maintenance (`sessionize maintain`): compaction into fewer files and
snapshot expiry keep every row exactly once, keep what job recovery reads, and
are safe while a job commits to the same table (on S3 + PostgreSQL)."""

import os
import signal
import time

from conftest import catalog, read_table
from kafka import Job
from reference import dead_positions, matches, read_topic, sessionize_records
from test_lakehouse import as_rows, dead_letters, lines_in
from test_streaming import broker, generate, produce  # noqa: F401  (fixture)

COMMON = ("--checkpoint-interval", "100ms")


def data_files(table) -> int:
    return table.inspect.files().num_rows


def test_compaction_and_expiry_keep_every_row_once(run, binary, broker, tmp_path):
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "1500", "--rate", "0.2", "--duration", "3d",
             "--seed", "17", "--events", "15000")
    produce(run, broker, "clicks", events)
    warehouse = tmp_path / "wh"
    Job(binary, broker, "clicks", warehouse, tmp_path / "state", "--test-mode", *COMMON,
        "--max-events-per-batch", "100").wait()

    table = catalog(warehouse).load_table("sessions.user_sessions")
    rows_before = as_rows(read_table(warehouse))
    dead_before = dead_letters(read_table(warehouse, "sessions.rejected_events"))
    files_before = data_files(table)
    snapshots_before = len(table.snapshots())
    job_snapshot = table.current_snapshot().summary["sessionize.checkpoint-id"]
    on_disk = lambda: len(list((warehouse / "sessions/user_sessions/data").rglob("*.parquet")))
    assert files_before > 100 and snapshots_before > 20, (files_before, snapshots_before)

    out = run("maintain", "--warehouse", warehouse, "--keep-snapshots-for", "1ms",
              "--keep-snapshots", "3").stdout.decode()
    assert "compacted sessions.user_sessions" in out, out

    table = catalog(warehouse).load_table("sessions.user_sessions")
    assert as_rows(read_table(warehouse)) == rows_before
    assert dead_letters(read_table(warehouse, "sessions.rejected_events")) == dead_before
    files_after = data_files(table)
    assert files_after * 5 < files_before, (files_before, files_after)
    assert table.current_snapshot().summary.operation.value == "replace"
    assert len(table.snapshots()) <= 4 < snapshots_before
    # The job's own last snapshot stays: its recovery reads it.
    assert any(s.summary.get("sessionize.checkpoint-id") == job_snapshot
               for s in table.snapshots())
    # The job's last snapshot still uses the small files, so they stay...
    assert on_disk() == files_before + files_after

    # ...until the job, started again from its checkpoint, has committed after
    # the compaction (writing nothing twice).
    Job(binary, broker, "clicks", warehouse, tmp_path / "state", "--test-mode", *COMMON,
        "--max-events-per-batch", "100").wait()
    assert as_rows(read_table(warehouse)) == rows_before
    out = run("maintain", "--warehouse", warehouse, "--keep-snapshots-for", "1ms",
              "--keep-snapshots", "1").stdout.decode()
    assert "compacted sessions.user_sessions: 0 files" in out, out
    assert on_disk() == files_after


def test_maintenance_during_a_streaming_run_loses_and_doubles_nothing(
        run, binary, broker, lakehouse, tmp_path):
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "1000", "--rate", "0.3", "--duration", "2d",
             "--late-rate", "0", "--seed", "4", "--events", "20000")
    lines = events.read_text().splitlines(keepends=True)
    produce(run, broker, "clicks", events)

    job = Job(binary, broker, "clicks", lakehouse.flags, tmp_path / "state", *COMMON,
              "--max-events-per-batch", "200", env=lakehouse.env)
    job.wait_consumed(1)
    maintained = 0
    while job.consumed() < len(lines) and maintained < 20:
        assert job.proc.poll() is None, job.log.read_text()[-3000:]
        proc = run("maintain", *lakehouse.flags, "--min-input-files", "2",
                   "--keep-snapshots-for", "1ms", "--keep-snapshots", "2", env=lakehouse.env)
        maintained += "compacted sessions.user_sessions: 0 files" not in proc.stdout.decode()
        time.sleep(0.2)
    job.wait_consumed(len(lines))
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    Job(binary, broker, "clicks", lakehouse.flags, tmp_path / "state", "--test-mode", *COMMON,
        "--max-events-per-batch", "1000", env=lakehouse.env).wait()

    assert maintained >= 2, "no compaction ran while the job was committing"
    print(f"{maintained} compactions during the run")
    # Against the model over the topic as read back: every session once, every
    # dead letter once.
    model = sessionize_records(read_topic(broker.servers, "clicks", len(lines)))
    matches(lakehouse.read(), model.sessions)
    assert dead_positions(lakehouse.read("sessions.rejected_events")) == model.dead


def test_a_job_maintains_its_own_tables_when_asked(run, binary, broker, tmp_path):
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "1000", "--rate", "0.3", "--duration", "2d",
             "--late-rate", "0", "--seed", "9", "--events", "15000")
    produce(run, broker, "clicks", events)
    Job(binary, broker, "clicks", tmp_path / "reference", tmp_path / "ref-state",
        "--kafka-group", "reference", "--test-mode", *COMMON).wait()

    maintained = ("--maintain-every", "300ms", "--min-input-files", "2",
                  "--keep-snapshots-for", "1ms", "--keep-snapshots", "2")
    job = Job(binary, broker, "clicks", tmp_path / "wh", tmp_path / "state", *COMMON,
              "--max-events-per-batch", "100", *maintained)
    job.wait_consumed(sum(1 for _ in open(events)))
    deadline = time.time() + 30
    log = lambda: job.log.read_text()
    while "snapshot expiry" not in log() and time.time() < deadline:
        time.sleep(0.2)
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    Job(binary, broker, "clicks", tmp_path / "wh", tmp_path / "state", "--test-mode",
        *COMMON).wait()

    compactions = [line for line in log().splitlines()
                   if "compaction" in line and "files_removed=0" not in line]
    assert compactions, log()[-3000:]
    assert as_rows(read_table(tmp_path / "wh")) == as_rows(read_table(tmp_path / "reference"))
    model = sessionize_records(read_topic(broker.servers, "clicks", lines_in(events)))
    matches(read_table(tmp_path / "wh"), model.sessions)
    expiries = [line for line in log().splitlines() if "snapshot expiry" in line
                and "user_sessions" in line]
    counts = [(int(line.split("snapshots_before=")[1].split()[0]),
               int(line.split("snapshots_after=")[1].split()[0])) for line in expiries]
    assert any(after < before for before, after in counts), counts


def strays(data_dir, age_seconds):
    """A file a crashed writer would leave: written, never committed."""
    data_dir.mkdir(parents=True, exist_ok=True)
    old, new = data_dir / "crashed-old.parquet", data_dir / "crashed-new.parquet"
    for stray in (old, new):
        stray.write_bytes(b"PAR1 not committed")
    then = time.time() - age_seconds
    os.utime(old, (then, then))
    return old, new


def test_orphan_files_older_than_the_age_are_deleted(run, lakehouse, tmp_path):
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "300", "--rate", "1.3", "--duration", "3h",
             "--seed", "12", "--events", "5000")
    local = tmp_path / "wh"
    run("run", "--input", events, "--warehouse", local)
    run("run", "--input", events, *lakehouse.flags, "--state-dir", tmp_path / "state",
        env=lakehouse.env)
    rows = as_rows(read_table(local))
    two_days = 2 * 86400
    tables = {
        "local": (["--warehouse", local], None, local / "sessions/user_sessions"),
        "s3": (lakehouse.flags, lakehouse.env,
               lakehouse.store.root / lakehouse.bucket / "warehouse/sessions/user_sessions"),
    }
    for name, (flags, env, location) in tables.items():
        old, new = strays(location / "data" / "session_date=2025-01-01", two_days)
        old_metadata, _ = strays(location / "metadata", two_days)
        refused = run("maintain", *flags, "--orphans-older-than", "1m", env=env, check=False)
        assert refused.returncode != 0 and b"at least 10m" in refused.stderr

        out = run("maintain", *flags, "--no-compaction", "--orphans-older-than", "1d",
                  env=env).stdout.decode()
        line = next(line for line in out.splitlines() if "expired sessions.user_sessions" in line)
        assert line.endswith(", 2 orphan files"), (name, out)
        assert not old.exists() and not old_metadata.exists() and new.exists(), name
        table_rows = read_table(local) if name == "local" else lakehouse.read()
        assert as_rows(table_rows) == rows, name
