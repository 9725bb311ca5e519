"""Events from producers we do not control: the job keeps going, and every event
ends in a session or in the dead-letter table with its reason."""

import json
import time
import zlib

from conftest import read_table
from kafka import Job
from test_streaming import broker  # noqa: F401  (fixture)

T0 = 1_700_000_000_000


def distinct_urls(path, count):
    """Users of ten events each, every event on a page URL never seen before."""
    with open(path, "w") as f:
        for i in range(count):
            page = f"https://shop.example/item?id={i}&ref=campaign-{i % 97}&s=0123456789abcdef"
            f.write(json.dumps({"uuid": f"user{i // 10}", "event_id": f"e{i}",
                                "event_timestamp": T0 + i * 100, "page_name": page}) + "\n")


def counted(warehouse):
    rows = read_table(warehouse)
    return len(rows), sum(r["event_count"] for r in rows)


def test_a_million_distinct_page_names_fit_the_default_plugin_memory(run, tmp_path):
    # 1,000,000 URLs of ~80 bytes: far more than the plugin's 64 MiB if texts
    # were kept for the life of the job.
    events = tmp_path / "urls.jsonl"
    distinct_urls(events, 1_000_000)
    run("run", "--input", events, "--warehouse", tmp_path / "wh", "--state-dir", tmp_path / "st")
    assert counted(tmp_path / "wh") == (100_000, 1_000_000)


def test_distinct_page_names_streamed_fit_a_small_plugin_memory(run, binary, broker, tmp_path):
    # The same through Kafka with a quarter of the events and a quarter of the
    # memory, across checkpoints (which store the compacted table). Polls of
    # 10,000: the instance keeps every text of the engine's table, those of
    # events still waiting for the watermark too, and with the default 50,000
    # a poll of partitions read unevenly leaves enough waiting to outgrow 16 MiB
    # (3 runs in 6 on nisshi, before and after 2026-12-07's changes alike; an
    # open limitation: texts should reach the rules when their events do).
    events = tmp_path / "urls.jsonl"
    distinct_urls(events, 250_000)
    run("produce", "--kafka-servers", broker.servers, "--topic", "urls", "--partitions", "2",
        "--input", events)
    job = Job(binary, broker, "urls", tmp_path / "wh", tmp_path / "st", "--test-mode",
              "--plugin-memory-mib", "16", "--checkpoint-interval", "1s",
              "--max-events-per-batch", "10000")
    job.wait()
    assert counted(tmp_path / "wh") == (25_000, 250_000)


def now_ms():
    return int(time.time() * 1000)


def line(uuid, t, page="home", **extra):
    return json.dumps({"uuid": uuid, "event_id": f"{uuid}-{t}", "event_timestamp": t,
                       "page_name": page, **extra}) + "\n"


def dead_letters(warehouse):
    return read_table(warehouse, "sessions.rejected_events")


def test_oversized_records_and_fields_are_dead_lettered_with_their_bound(run, tmp_path):
    t = now_ms() - 3_600_000
    events = tmp_path / "events.jsonl"
    events.write_text(
        line("alice", t)
        + line("alice", t + 1000, page="p" * 5_000_000)   # a 5 MB page name: the line is too large
        + line("u" * 100_000, t + 2000)                   # a 100 KB uuid
        + line("alice", t + 3000, page="q" * 20_000)      # a 20 KB page name
        + line("alice", t + 4000)
    )
    run("run", "--input", events, "--warehouse", tmp_path / "wh")
    assert counted(tmp_path / "wh") == (1, 2)
    reasons = sorted((r["position"], r["reason"]) for r in dead_letters(tmp_path / "wh"))
    assert [p for p, _ in reasons] == [2, 3, 4]
    assert reasons[0][1].startswith("record of 5000") and "(--max-record-bytes)" in reasons[0][1]
    assert reasons[1][1] == "uuid of 100000 bytes is over the limit of 256 (--max-uuid-bytes)"
    assert reasons[2][1] == "page_name of 20000 bytes is over the limit of 8192 (--max-text-bytes)"
    # The bounds are the operator's to move.
    run("run", "--input", events, "--warehouse", tmp_path / "wide", "--max-text-bytes", "32768")
    assert counted(tmp_path / "wide") == (1, 3)


def test_a_microsecond_timestamp_is_dead_lettered_and_poisons_nothing(run, tmp_path):
    t = now_ms() - 600_000
    events = tmp_path / "events.jsonl"
    events.write_text(line("bob", t) + line("bob", t * 1000)
                      + "".join(line("bob", t + i * 10_000) for i in range(1, 11)))
    run("run", "--input", events, "--warehouse", tmp_path / "wh")
    assert counted(tmp_path / "wh") == (1, 11)
    [dead] = dead_letters(tmp_path / "wh")
    assert dead["position"] == 2
    assert dead["reason"].endswith(
        "ahead of the wall clock (--max-future-skew): it looks like microseconds, not milliseconds")


def test_a_microsecond_timestamp_poisons_no_partition_across_a_restart(run, binary, broker,
                                                                      tmp_path):
    t = now_ms() - 600_000
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text(line("carol", t) + line("carol", t * 1000)
                     + "".join(line("carol", t + i * 10_000) for i in range(1, 6)))
    second.write_text("".join(line("carol", t + i * 10_000) for i in range(6, 11)))
    args = ("--test-mode", "--checkpoint-interval", "200ms")
    run("produce", "--kafka-servers", broker.servers, "--topic", "clicks", "--partitions", "1",
        "--input", first)
    # The first job stops at the end of the topic; test mode closes what is
    # open, so the restart continues from the checkpointed clock.
    Job(binary, broker, "clicks", tmp_path / "wh", tmp_path / "st", *args).wait()
    run("produce", "--kafka-servers", broker.servers, "--topic", "clicks", "--partitions", "1",
        "--input", second)
    Job(binary, broker, "clicks", tmp_path / "wh", tmp_path / "st", *args).wait()
    assert sum(r["event_count"] for r in read_table(tmp_path / "wh")) == 11
    assert len(dead_letters(tmp_path / "wh")) == 1


def waiting_peak(summary):
    """`waiting events:    at most N (...)` from the job's summary."""
    [line] = [l for l in summary.splitlines() if l.startswith("waiting events:")]
    return int(line.split("at most")[1].split()[0])


def test_a_lagging_partition_pauses_the_others_and_the_result_is_the_bounded_runs(
        run, binary, broker, tmp_path):
    # librdkafka's default partitioner: CRC-32 of the key, modulo partitions.
    partition = lambda uuid: zlib.crc32(uuid.encode()) % 4  # noqa: E731
    users = [f"user{i}" for i in range(200)]
    rows = []
    for i in range(40_000):
        uuid = users[i % len(users)]
        t = T0 + i * 180 - (3_600_000 if partition(uuid) == 0 else 0)
        rows.append((t, uuid, i))
    rows.sort()
    events = tmp_path / "events.jsonl"
    events.write_text("".join(
        json.dumps({"uuid": u, "event_id": f"e{i}", "event_timestamp": t}) + "\n"
        for t, u, i in rows))
    run("produce", "--kafka-servers", broker.servers, "--topic", "skewed", "--partitions", "4",
        "--input", events)
    run("run", "--input", events, "--warehouse", tmp_path / "bounded")
    peaks = {}
    for drift in ["2m", "100000h"]:
        job = Job(binary, broker, "skewed", tmp_path / drift, tmp_path / f"st-{drift}",
                  "--test-mode", "--max-events-per-batch", "500", "--checkpoint-interval", "1s",
                  "--max-partition-drift", drift, "--kafka-group", f"g-{drift}")
        peaks[drift] = waiting_peak(job.wait())

    spans = lambda wh: sorted((r["uuid"], r["session_start_time_ms"], r["session_end_time_ms"],  # noqa: E731
                               r["event_count"]) for r in read_table(wh))
    assert spans(tmp_path / "2m") == spans(tmp_path / "bounded")
    assert spans(tmp_path / "100000h") == spans(tmp_path / "bounded")
    assert peaks["2m"] * 2 < peaks["100000h"], peaks
