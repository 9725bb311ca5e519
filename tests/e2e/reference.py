"""The sessionization semantics written again, independently of the Rust code, in
plain Python from docs/semantics.md: the expectation the end-to-end
tests compare the tables against.

A file is one partition. A topic is read back with its own client
(`read_topic`), so the model knows each record's partition and offset without
asking the job: lateness is judged per partition, the watermark that decides
`end_reason` at the end of input is the least over partitions (one job) or the
partition's own (a group member runs one engine per partition)."""

import json
import re
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyiceberg.transforms import BucketTransform
from pyiceberg.types import StringType

MIN = 60_000
SESSION_NAMESPACE = uuidlib.UUID("5e5510e1-2e00-4c0b-9d7a-62a10c5e55d1")
_bucket = BucketTransform(100).transform(StringType())
_DIGITS = re.compile(r"[0-9]+")

# The columns a session row is compared on (all but rule_version and end_reason,
# which `matches` checks on its own).
COLUMNS = [
    "uuid", "session_id", "session_start_time_ms", "session_end_time_ms",
    "session_duration_seconds", "event_count", "pages_visited", "session_date",
    "user_hash_bucket",
]


@dataclass
class Result:
    sessions: list  # of dicts, one per session row
    accepted: int
    late: int
    duplicates: int
    rejected: int
    # (partition, offset) of every record that is a dead letter (rejected or late).
    dead: set = field(default_factory=set)


def _valid(raw: str):
    """The event, or None if the record is not a valid event."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    user = obj.get("uuid")
    if not isinstance(user, str) or not user:
        return None
    ts = obj.get("event_timestamp")
    if isinstance(ts, bool):
        return None
    if isinstance(ts, str):
        if not _DIGITS.fullmatch(ts) or int(ts) >= 2**63:
            return None
        ts = int(ts)
    elif isinstance(ts, int):
        if ts < 0 or ts >= 2**63:
            return None
    elif isinstance(ts, float):
        if ts < 0 or not ts.is_integer():
            return None
        ts = int(ts)
    else:
        return None
    event_id = obj.get("event_id")
    if isinstance(event_id, bool) or not (event_id is None or isinstance(event_id, (str, int))):
        return None
    page = obj.get("page_name")
    if page is not None and not isinstance(page, str):
        return None
    details = obj.get("event_details")
    if details is not None and not isinstance(details, dict):
        return None
    return user, None if event_id is None else str(event_id), ts, page


def sessionize(lines, inactivity_ms=30 * MIN, max_duration_ms=120 * MIN, lateness_ms=10 * MIN):
    """A file's lines (blank lines are no records): one partition."""
    records = [(0, i, raw) for i, raw in enumerate(lines) if raw.strip()]
    return sessionize_records(records, inactivity_ms, max_duration_ms, lateness_ms)


def sessionize_records(records, inactivity_ms=30 * MIN, max_duration_ms=120 * MIN,
                       lateness_ms=10 * MIN, watermark="least"):
    """`records`: (partition, offset, raw text) in the order each partition
    holds them. `watermark`: "least" over partitions (one job reading the
    topic) or "own" (one engine per partition, as group members run)."""
    accepted, seen, dead = [], set(), set()
    late = duplicates = rejected = 0
    max_seen = {}
    for partition, offset, raw in records:
        event = _valid(raw)
        if event is None:
            rejected += 1
            dead.add((partition, offset))
            continue
        user, event_id, ts, page = event
        greatest = max_seen.get(partition)
        if greatest is not None and ts < greatest - lateness_ms:
            late += 1
            dead.add((partition, offset))
            continue
        max_seen[partition] = ts if greatest is None else max(greatest, ts)
        if event_id is not None:
            if (user, event_id) in seen:
                duplicates += 1
                continue
            seen.add((user, event_id))
        accepted.append((partition, user, event_id, ts, page))
    marks = {p: t - lateness_ms for p, t in max_seen.items()}
    least = min(marks.values(), default=0)
    sessions = _sessions(accepted, inactivity_ms, max_duration_ms,
                         lambda p: least if watermark == "least" else marks[p])
    return Result(sessions, len(accepted), late, duplicates, rejected, dead)


def _sessions(accepted, inactivity_ms, max_duration_ms, watermark_of):
    by_user = {}
    for partition, user, event_id, ts, page in accepted:
        by_user.setdefault(user, []).append((ts, event_id or "", page or "", partition))
    sessions = []

    def expiry(s):
        idle, longest = s["last"] + inactivity_ms, s["start"] + max_duration_ms
        return (longest, "max_duration") if longest < idle else (idle, "inactivity")

    def emit(user, s, reason, timeout_reason):
        start, end = s["start"], s["last"]
        sessions.append({
            "uuid": user,
            "session_id": str(uuidlib.uuid5(SESSION_NAMESPACE, f"{user}:{start}")),
            "session_start_time_ms": start,
            "session_end_time_ms": end,
            "session_duration_seconds": (end - start) / 1000,
            "event_count": s["count"],
            "pages_visited": s["pages"],
            "session_date": datetime.fromtimestamp(start / 1000, tz=timezone.utc).date(),
            "user_hash_bucket": _bucket(user),
            "end_reason": reason,
            # What it would say had the watermark passed its expiry.
            "timeout_reason": timeout_reason,
        })

    for user, events in by_user.items():
        events.sort()
        current = None
        for ts, _, page, partition in events:
            if current is not None:
                at, reason = expiry(current)
                if ts > at:
                    emit(user, current, reason, reason)
                    current = None
            if current is None:
                current = {"start": ts, "last": ts, "count": 0, "pages": [], "partition": partition}
            current["last"] = ts
            current["count"] += 1
            if page and page not in current["pages"]:
                current["pages"].append(page)
        if current is not None:
            at, reason = expiry(current)
            ended = reason if watermark_of(current["partition"]) > at else "end_of_input"
            emit(user, current, ended, reason)
    return sessions


def read_topic(servers, topic, count, timeout=60, quiet_s=0.0):
    """Every record of `topic` as (partition, offset, text), read with a client
    of its own (confluent-kafka) until `count` records are in, then on until
    none comes for `quiet_s` (for a broker whose end of topic may be stale)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"reference-{time.time()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    records = []

    def take(messages) -> bool:
        got = False
        for message in messages:
            if message.error() is None:
                value = message.value() or b""
                records.append((message.partition(), message.offset(),
                                value.decode("utf-8", errors="replace")))
                got = True
        return got

    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.time() + timeout
        while len(records) < count:
            assert time.time() < deadline, f"read {len(records)} of {count} records of {topic}"
            take(consumer.consume(1000, 0.5))
        quiet_until = time.time() + quiet_s
        while time.time() < quiet_until:
            if take(consumer.consume(1000, 0.5)):
                quiet_until = time.time() + quiet_s
    finally:
        consumer.close()
    records.sort(key=lambda r: (r[0], r[1]))
    return records


def row_key(row):
    return tuple(tuple(row[c]) if isinstance(row[c], list) else row[c] for c in COLUMNS)


def matches(rows, expected, skip=lambda row: False):
    """Asserts the table's session `rows` are the model's `expected` sessions,
    each once: every column, and `end_reason` too, except that a session the
    model leaves open at the end of input may also carry the limit it would
    have reached (an idle partition stops holding the watermark back)."""
    rows = [r for r in rows if not skip(r)]
    want = [s for s in expected if not skip(s)]
    got_ids = [r["session_id"] for r in rows]
    assert len(got_ids) == len(set(got_ids)), "a session was written twice"
    got = sorted(map(row_key, rows))
    need = sorted(map(row_key, want))
    if got != need:
        missing, extra = set(need) - set(got), set(got) - set(need)
        raise AssertionError(f"{len(missing)} sessions missing, {len(extra)} not expected; "
                             f"e.g. missing {sorted(missing)[:2]}, extra {sorted(extra)[:2]}")
    reasons = {s["session_id"]: s for s in want}
    for row in rows:
        model = reasons[row["session_id"]]
        allowed = {model["end_reason"]}
        if model["end_reason"] == "end_of_input":
            allowed.add(model["timeout_reason"])
        assert row["end_reason"] in allowed, (row["session_id"], row["end_reason"], allowed)


def dead_positions(rows):
    """(partition, position) of the dead letters of input records; asserts
    that none is in the table twice (the table is exactly once)."""
    positions = [(r["partition"], r["position"]) for r in rows if r["partition"] >= 0]
    assert len(positions) == len(set(positions)), "a dead letter was written twice"
    return set(positions)
