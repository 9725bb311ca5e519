"""The streaming job when the Iceberg catalog is unavailable for a while: it waits
the fault out and loses nothing, writes nothing twice."""

import signal
import sqlite3
import time

from conftest import read_table
from kafka import Job
from reference import matches, read_topic, sessionize_records
from test_streaming import broker, generate, produce, sessions  # noqa: F401  (fixture)


def dead_letters(warehouse):
    return sorted(r["raw"] for r in read_table(warehouse, "sessions.rejected_events"))


def test_a_locked_catalog_is_waited_out(run, binary, broker, tmp_path):
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "2000", "--rate", "8.7", "--duration", "6h",
             "--late-rate", "0", "--seed", "17", "--events", "30000")
    lines = events.read_text().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(lines[:15000]))
    second.write_text("".join(lines[15000:]))
    produce(run, broker, "clicks", first)
    warehouse = tmp_path / "streamed"
    job = Job(binary, broker, "clicks", warehouse, tmp_path / "state",
              "--checkpoint-interval", "300ms")
    job.wait_consumed(15000)

    # A reader holds the catalog locked for longer than SQLite's own 5 s busy
    # wait, while the job has new input to checkpoint.
    lock = sqlite3.connect(warehouse / "catalog.db", timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        produce(run, broker, "clicks", second)
        time.sleep(8)
    finally:
        lock.rollback()
        lock.close()
    assert job.proc.poll() is None, f"the job died on the lock: {job.log.read_text()[-3000:]}"

    job.wait_consumed(len(lines), timeout=120)
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    log = job.log.read_text()
    assert "database is locked" in log and "retrying" in log, "the job never met the lock"
    # Flush what is still open, then compare with a bounded run over all events.
    Job(binary, broker, "clicks", warehouse, tmp_path / "state", "--test-mode").wait()
    run("run", "--input", events, "--warehouse", tmp_path / "bounded")

    streamed = sessions(warehouse, False)
    assert streamed == sessions(tmp_path / "bounded", False)
    ids = [r["session_id"] for r in read_table(warehouse)]
    assert len(ids) == len(set(ids)), "a session was written twice"
    assert dead_letters(warehouse) == dead_letters(tmp_path / "bounded")
    model = sessionize_records(read_topic(broker.servers, "clicks", sum(1 for x in lines if x.strip())))
    matches(read_table(warehouse), model.sessions)
