"""A topic whose producers do not key by uuid: `sessionize repartition` writes it
again keyed by uuid, and the job reading that topic gets each user's events on
one partition. The repartition step is killed with SIGKILL once and restarted:
it is at least once, and the job counts the records it sends again once. It is
killed before its first commit too, so that it certainly sends records twice.
The table, read back by pyiceberg, equals the reference model over the keyed
topic as read back (repeats included), and a bounded run over the events."""

import random
import signal
import subprocess
import time

from confluent_kafka import Producer

from kafka import Job, topic_size
from conftest import read_table
from reference import matches, read_topic, sessionize_records
from test_scale_out import flushers, real_sessions, stamp, wait_for_sessions
from test_streaming import broker  # noqa: F401  (fixture)


def scattered(broker, topic, lines):  # noqa: F811
    """Each line to a random partition of an 8-partition topic, as producers
    that key by something else (or nothing) do."""
    producer = Producer({"bootstrap.servers": broker.servers, "linger.ms": 20})
    rng = random.Random(5)
    for line in lines:
        producer.produce(topic, value=line.encode(), partition=rng.randrange(8))
        producer.poll(0)
    assert producer.flush(60) == 0


def repartitioned(servers, at_least, timeout=180):
    """Until the repartition step has committed every record of the raw
    topic (which holds `at_least` records by now)."""
    from confluent_kafka import Consumer, TopicPartition

    # Not subscribed: it reads the group's offsets without joining it.
    consumer = Consumer({"bootstrap.servers": servers, "group.id": "sessionize-repartition",
                         "enable.auto.commit": False})
    partitions = [TopicPartition("raw", p) for p in range(8)]
    deadline = time.time() + timeout
    try:
        while True:
            ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
            done = [tp.offset for tp in consumer.committed(partitions, timeout=10)]
            if done == ends and sum(ends) >= at_least:
                return
            assert time.time() < deadline, f"the step committed {done} of {ends}"
            time.sleep(0.5)
    finally:
        consumer.close()


def test_a_topic_not_keyed_by_uuid_is_repartitioned_and_sessionized_exactly(
        run, binary, broker, tmp_path):  # noqa: F811
    path = tmp_path / "events.jsonl"
    run("generate", "--output", path, "--num-users", "1000", "--rate", "2", "--duration", "12h",
        "--late-rate", "0", "--seed", "17", "--events", "20000")
    lines = path.read_text().splitlines(keepends=True)
    last = max(stamp(line) for line in lines)
    flush = flushers(last).splitlines(keepends=True)
    everything = tmp_path / "all.jsonl"
    everything.write_text("".join(lines + flush))
    # Re-keyed events come out of order by as much as the raw backlog spans
    # (a chunk below): 30 minutes of lateness covers it, for both runs.
    lateness = ("--allowed-lateness", "30")
    run("run", "--input", everything, "--warehouse", tmp_path / "bounded", *lateness)
    expected = real_sessions(tmp_path / "bounded")

    # The raw topic, created with 8 partitions, filled at random below.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    run("produce", "--kafka-servers", broker.servers, "--topic", "raw", "--partitions", "8",
        "--input", empty)

    def repartition(every="300ms"):
        log = open(tmp_path / "repartition.log", "ab")
        return subprocess.Popen(
            [str(binary), "repartition", "--kafka-servers", broker.servers, "--from-topic", "raw",
             "--to-topic", "clicks", "--partitions", "8", "--commit-interval", every],
            stdout=subprocess.PIPE, stderr=log)

    # The first step never gets to commit: killed after it sent the first
    # chunk, it leaves every record of it to be sent again.
    step = repartition("1h")
    job = Job(binary, broker, "clicks", tmp_path / "streamed", tmp_path / "state",
              "--checkpoint-interval", "300ms", *lateness)
    # As live traffic comes: minutes of event time at a time. (A backlog
    # spread over partitions at random comes out of any re-keying as much out
    # of order as the backlog is long, and late beyond the lateness.)
    chunk, sent = 800, 0
    for start in range(0, len(lines), chunk):
        part = lines[start:start + chunk]
        scattered(broker, "raw", part)
        sent += len(part)
        job.wait_consumed(sent)
        if start == 0:
            step.send_signal(signal.SIGKILL)
            step.wait()
            step = repartition()
            # Every record of the first chunk comes again (once the group
            # lets go of the killed step's partitions) before more traffic.
            job.wait_consumed(sent + len(part), timeout=180)
        if start // chunk == 8:
            # Killed between commits: what it sent since its last one comes again.
            step.send_signal(signal.SIGKILL)
            step.wait()
            step = repartition()
    # The flushers come after every real event: once the step has committed
    # all of the raw topic (it commits what the keyed topic acknowledged) and
    # the job has read all of the keyed one. (Counting what the job consumed
    # is not enough: the repeats above count too.)
    repartitioned(broker.servers, len(lines))
    job.wait_consumed(topic_size(broker.servers, "clicks"))
    scattered(broker, "raw", flush)
    wait_for_sessions(tmp_path / "streamed", len(expected), [job])
    step.send_signal(signal.SIGTERM)
    out, _ = step.communicate(timeout=60)
    assert step.returncode == 0 and b"keyed by uuid" in out, out
    job.proc.send_signal(signal.SIGTERM)
    job.proc.wait(60)

    assert real_sessions(tmp_path / "streamed") == expected
    keyed = topic_size(broker.servers, "clicks")
    assert keyed >= len(lines) + len(flush) + chunk, "the first chunk was not sent twice"
    model = sessionize_records(read_topic(broker.servers, "clicks", keyed), lateness_ms=30 * 60_000)
    assert model.duplicates + model.late >= chunk, (model.duplicates, model.late)
    matches(read_table(tmp_path / "streamed"), model.sessions,
            skip=lambda s: s["uuid"].startswith("flush-"))
    log = job.log.read_text()
    assert "more than one partition" not in log, "a user's events came on two partitions"
