"""The streaming job against a real Kafka-protocol broker on loopback: same result
as the bounded run, exactly once across kill -9, broker outages and restarts."""

import json
import random
import signal
import subprocess
import time

import pytest

from conftest import SESSION_COLUMNS, catalog, read_table
from kafka import Broker, Job
from reference import dead_positions, matches, read_topic, sessionize, sessionize_records


def sessions(warehouse, with_reason=True):
    cols = SESSION_COLUMNS if with_reason else SESSION_COLUMNS[:-1]
    return sorted(tuple(tuple(r[c]) if isinstance(r[c], list) else r[c] for c in cols)
                  for r in read_table(warehouse))


@pytest.fixture
def broker(tmp_path, postgres):
    """A broker of the test's own, stored in a database of the session's PostgreSQL."""
    b = Broker(tmp_path / "broker", postgres.new_database())
    b.start()
    yield b
    b.stop()


def generate(run, path, *args):
    run("generate", "--output", path, *args)
    return sum(1 for line in open(path) if line.strip())


def produce(run, broker, topic, path):
    run("produce", "--kafka-servers", broker.servers, "--topic", topic, "--partitions", "4",
        "--input", path)


def test_streaming_equals_the_bounded_run(run, binary, broker, tmp_path):
    events = tmp_path / "events.jsonl"
    # No event beyond the lateness: a file is one partition, the topic four, and
    # lateness is judged per partition.
    n = generate(run, events, "--num-users", "1000", "--rate", "4.3", "--duration", "12h",
             "--late-rate", "0", "--seed", "11", "--events", "40000")
    produce(run, broker, "clicks", events)
    run("run", "--input", events, "--warehouse", tmp_path / "bounded")
    job = Job(binary, broker, "clicks", tmp_path / "streamed", tmp_path / "state",
              "--test-mode", "--checkpoint-interval", "500ms", "--max-events-per-batch", "5000")
    job.wait()

    assert len(read_table(tmp_path / "streamed")) > 1500
    # Both runs against the model: the file as one partition, the topic as read back.
    matches(read_table(tmp_path / "bounded"), sessionize(events.read_text().splitlines()).sessions)
    model = sessionize_records(read_topic(broker.servers, "clicks", n))
    matches(read_table(tmp_path / "streamed"), model.sessions)
    assert dead_positions(read_table(tmp_path / "streamed", "sessions.rejected_events")) == model.dead
    assert sessions(tmp_path / "streamed", False) == sessions(tmp_path / "bounded", False)
    # Reasons agree too, except where the end of input meets the watermark: the
    # topic's final watermark is the least over its partitions, the file's is one.
    bounded = {r["session_id"]: r["end_reason"] for r in read_table(tmp_path / "bounded")}
    streamed = {r["session_id"]: r["end_reason"] for r in read_table(tmp_path / "streamed")}
    differ = [k for k in bounded if bounded[k] != streamed[k]]
    assert all({bounded[k], streamed[k]} == {"end_of_input", "inactivity"} for k in differ)
    # Snapshots record the checkpoint, the offsets and the rules.
    snapshot = catalog(tmp_path / "streamed").load_table("sessions.user_sessions").current_snapshot()
    assert int(snapshot.summary["sessionize.checkpoint-id"]) >= 1
    assert sum(json.loads(snapshot.summary["sessionize.offsets"]).values()) == n
    dead = read_table(tmp_path / "streamed", "sessions.rejected_events")
    assert dead and all(r["partition"] in range(4) and r["position"] >= 0
                        and r["source"] == "kafka:clicks" for r in dead)


def test_kill_minus_nine_loses_nothing_and_writes_nothing_twice(run, binary, broker, tmp_path):
    events = tmp_path / "events.jsonl"
    # 5.5 h of event time (sessions close by inactivity and by the 2 h limit
    # all along); each kill below moves the job on by a checkpoint or two.
    n = generate(run, events, "--num-users", "1250", "--rate", "5", "--duration", "2d",
                 "--seed", "5", "--events", "100000")
    assert n >= 90_000
    produce(run, broker, "clicks", events)
    common = ("--test-mode", "--checkpoint-interval", "100ms", "--max-events-per-batch", "1000")

    # Each run is killed at a random moment after it has made progress (so the
    # job always moves on), anywhere in its cycle of polls, state writes and
    # Iceberg commits.
    rng = random.Random(1234)
    kills = 0
    progress = []
    while kills < 20:
        before = progress[-1] if progress else 0
        job = Job(binary, broker, "clicks", tmp_path / "crashed", tmp_path / "state", *common)
        while job.consumed() <= before and job.proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.1))
        if job.proc.poll() is not None:
            break  # finished before the kill: no more work to interrupt
        job.proc.send_signal(signal.SIGKILL)
        job.proc.wait()
        kills += 1
        progress.append(job.consumed())
    assert kills >= 20, f"the job finished after {kills} kills ({progress}); use more events"
    Job(binary, broker, "clicks", tmp_path / "crashed", tmp_path / "state", *common).wait()

    # Against the model over the topic as read back: every session once, every
    # dead letter once.
    model = sessionize_records(read_topic(broker.servers, "clicks", n, timeout=180))
    rows = read_table(tmp_path / "crashed")
    matches(rows, model.sessions)
    assert any(r["end_reason"] == "max_duration" for r in rows)
    assert dead_positions(read_table(tmp_path / "crashed", "sessions.rejected_events")) == model.dead


def test_a_broker_outage_is_waited_out(run, binary, broker, tmp_path):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "2000", "--rate", "8.7", "--duration", "6h",
             "--late-rate", "0", "--seed", "3", "--events", "30000")
    lines = events.read_text().splitlines(keepends=True)
    first.write_text("".join(lines[:15000]))
    second.write_text("".join(lines[15000:]))
    produce(run, broker, "clicks", first)
    job = Job(binary, broker, "clicks", tmp_path / "streamed", tmp_path / "state",
              "--checkpoint-interval", "300ms")
    job.wait_consumed(15000)
    broker.stop()
    time.sleep(30)
    assert job.proc.poll() is None, "the job gave up during the outage"
    broker.start()
    produce(run, broker, "clicks", second)
    job.wait_consumed(len(lines), timeout=120)
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    # Flush what is still open, then compare with a bounded run over all events.
    Job(binary, broker, "clicks", tmp_path / "streamed", tmp_path / "state", "--test-mode").wait()
    run("run", "--input", events, "--warehouse", tmp_path / "bounded")
    assert sessions(tmp_path / "streamed", False) == sessions(tmp_path / "bounded", False)
    model = sessionize_records(read_topic(broker.servers, "clicks", sum(1 for x in lines if x.strip())))
    matches(read_table(tmp_path / "streamed"), model.sessions)


def test_a_restart_keeps_open_sessions(run, binary, broker, tmp_path):
    start = 1_735_689_600_000
    minute = 60_000

    def event(i, t, page):
        return ('{"uuid":"alice","event_id":"a%d","event_timestamp":%d,"page_name":"%s"}\n'
                % (i, start + t * minute, page))

    before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
    before.write_text(event(1, 0, "home") + event(2, 5, "search"))
    after.write_text(event(3, 20, "checkout") + event(4, 25, "confirmation"))
    produce(run, broker, "clicks", before)
    job = Job(binary, broker, "clicks", tmp_path / "wh", tmp_path / "state",
              "--checkpoint-interval", "200ms")
    job.wait_consumed(2)
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    assert read_table(tmp_path / "wh") == []  # still open: nothing written yet
    produce(run, broker, "clicks", after)
    Job(binary, broker, "clicks", tmp_path / "wh", tmp_path / "state", "--test-mode").wait()
    rows = read_table(tmp_path / "wh")
    assert [(r["event_count"], r["pages_visited"], r["end_reason"]) for r in rows] == [
        (4, ["home", "search", "checkout", "confirmation"], "end_of_input")]
