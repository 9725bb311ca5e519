"""Sessions to a Kafka topic (`--sink`), read back with a client of our own
(confluent-kafka): every model session, through kill -9, at least once (nisshi
refuses transactional producers), repeats only of the same session with the same content,
and the topic agrees with the table."""

import datetime
import json
import random
import signal
import time

from conftest import SESSION_COLUMNS, read_table
from kafka import Job
from reference import dead_positions, matches, read_topic, sessionize_records
from test_streaming import broker, generate, produce  # noqa: F401  (fixture)


def read_all(servers, topic, timeout=30):
    """Every record of `topic` as (key, value as JSON, headers as a dict),
    read until nothing more comes for a few seconds."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"read-{time.time()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out, quiet_since, deadline = [], time.time(), time.time() + timeout
    try:
        while time.time() < deadline and time.time() - quiet_since < 5:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            headers = {k: v.decode() for k, v in (message.headers() or [])}
            out.append((message.key().decode(), json.loads(message.value()), headers))
            quiet_since = time.time()
    finally:
        consumer.close()
    return out


def as_table_row(value):
    """A topic record's value in the shape pyiceberg reads the table's rows."""
    row = {c: value[c] for c in SESSION_COLUMNS}
    row["session_date"] = datetime.date.fromisoformat(row["session_date"])
    return row


def test_sessions_reach_the_topic_at_least_once_through_kill_minus_nine(run, binary, broker,
                                                                         tmp_path):
    events = tmp_path / "events.jsonl"
    # 1.7 h of event time; each of the kills below moves the job on by a
    # checkpoint or two, the last run does the rest.
    n = generate(run, events, "--num-users", "1250", "--rate", "8", "--duration", "1d",
                 "--seed", "8", "--events", "50000")
    produce(run, broker, "clicks", events)
    common = ("--test-mode", "--sink", "iceberg,kafka", "--sessions-topic", "sessions",
              "--dead-letter-topic", "dead", "--checkpoint-interval", "100ms",
              "--max-events-per-batch", "1000")
    rng = random.Random(77)
    kills, before = 0, 0
    while kills < 6:
        job = Job(binary, broker, "clicks", tmp_path / "warehouse", tmp_path / "state", *common)
        while job.consumed() <= before and job.proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.1))
        if job.proc.poll() is not None:
            break
        job.proc.send_signal(signal.SIGKILL)
        job.proc.wait()
        kills += 1
        before = job.consumed()
    assert kills == 6, f"the job finished after {kills} kills; use more events"
    Job(binary, broker, "clicks", tmp_path / "warehouse", tmp_path / "state", *common).wait()

    model = sessionize_records(read_topic(broker.servers, "clicks", n, timeout=120))
    table = read_table(tmp_path / "warehouse")
    matches(table, model.sessions)
    records = read_all(broker.servers, "sessions")
    by_id = {}
    for key, value, headers in records:
        assert key == value["uuid"]
        assert headers["sessionize.rule-version"] == value["rule_version"]
        assert int(headers["sessionize.checkpoint-id"]) >= 1
        # A repeat is the same session with the same content.
        assert by_id.setdefault(value["session_id"], value) == value
    matches([as_table_row(v) for v in by_id.values()], model.sessions)
    # The topic and the table agree, row for row.
    assert {s: as_table_row(v) for s, v in by_id.items()} == \
        {r["session_id"]: {c: r[c] for c in SESSION_COLUMNS} for r in table}
    dead = {(v["partition"], v["position"]) for _, v, _ in read_all(broker.servers, "dead")}
    assert {d for d in dead if d[0] >= 0} == model.dead
    assert dead_positions(read_table(tmp_path / "warehouse", "sessions.rejected_events")) == model.dead


def test_the_topic_alone_and_the_flags_it_refuses(run, binary, broker, tmp_path):
    events = tmp_path / "events.jsonl"
    n = generate(run, events, "--num-users", "300", "--rate", "2", "--duration", "3h",
                 "--seed", "9")
    produce(run, broker, "clicks", events)
    Job(binary, broker, "clicks", tmp_path / "warehouse", tmp_path / "state", "--test-mode",
        "--sink", "kafka", "--sessions-topic", "sessions").wait()

    assert not (tmp_path / "warehouse").exists(), "no table with --sink kafka"
    model = sessionize_records(read_topic(broker.servers, "clicks", n))
    values = [v for _, v, _ in read_all(broker.servers, "sessions")]
    assert len(values) == len({v["session_id"] for v in values}), "a repeat without a crash"
    matches([as_table_row(v) for v in values], model.sessions)

    for flags, says in [
        (("--input", events, "--sink", "kafka"), "give --kafka-servers"),
        (("--kafka-servers", broker.servers, "--scale-out", "--sink", "kafka"),
         "use --sink iceberg,kafka"),
        (("--kafka-servers", broker.servers, "--dead-letter-topic", "dead"), "--sink kafka"),
        (("--kafka-servers", broker.servers, "--sink", "parquet"), "possible values"),
    ]:
        refused = run("run", *flags, "--warehouse", tmp_path / "other", check=False)
        assert refused.returncode != 0, flags
        assert says in refused.stderr.decode(), refused.stderr.decode()
