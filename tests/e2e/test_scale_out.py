"""Scale-out: several `sessionize run --scale-out` members of one consumer group
share a topic's partitions on a real broker (nisshi, cooperative-sticky), hand
partitions and their open sessions over through the warehouse. The table,
read back by pyiceberg, must equal a bounded run over the same events, with no
session written twice; where members also send sessions to a topic, the topic
must hold the table's sessions, repeats only as exact copies."""

import json
import random
import signal
import time


from conftest import SESSION_COLUMNS, catalog, read_table
from kafka import Job, topic_size
from reference import dead_positions, matches, read_topic, sessionize, sessionize_records
from test_sessions_topic import as_table_row, read_all
from test_streaming import broker  # noqa: F401  (fixture)

GROUP = ("--kafka-group", "fleet", "--group-session-timeout", "6s")
PACE = ("--checkpoint-interval", "300ms", "--max-events-per-batch", "300")
# Closed sessions to a topic as well as to the table: each member produces for
# the partitions it owns (at least once: nisshi refuses transactions).
TO_TOPIC = ("--sink", "iceberg,kafka", "--sessions-topic", "sessions")
FLUSHERS = 200


def prepare(run, tmp_path, broker, events=60000):  # noqa: F811
    """Generated events in two halves, the second to be produced later by
    `rest()`, then one event per flusher user a day after the last (200
    users: every one of the 8 partitions gets some), which moves each
    partition's watermark past every real session. Produces the first half
    and returns the sessions of a bounded run over all of it (flushers left
    out) and `rest`."""
    path = tmp_path / "events.jsonl"
    run("generate", "--output", path, "--num-users", "3000", "--rate", "10", "--duration", "12h",
        "--late-rate", "0", "--seed", "21", "--events", str(events))
    lines = open(path).read().splitlines(keepends=True)
    last = max(stamp(line) for line in lines)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(lines[: len(lines) // 2]))
    flush = flushers(last)
    second.write_text("".join(lines[len(lines) // 2:]) + flush)
    both = tmp_path / "both.jsonl"
    both.write_text(first.read_text() + second.read_text())
    run("run", "--input", both, "--warehouse", tmp_path / "bounded")
    matches(read_table(tmp_path / "bounded"), sessionize(both.read_text().splitlines()).sessions)

    def produce(part):
        run("produce", "--kafka-servers", broker.servers, "--topic", "clicks", "--partitions", "8",
            "--input", part)

    produce(first)
    return real_sessions(tmp_path / "bounded"), lambda: produce(second)


def flushers(last):
    """One event per flusher user a day after `last`: moves every partition's
    watermark past every real session."""
    return "".join(json.dumps({"uuid": f"flush-{i}", "event_id": f"flush-{i}",
                               "event_timestamp": last + 86_400_000, "page_name": "end"}) + "\n"
                   for i in range(FLUSHERS))


def member_id(job):
    deadline = time.time() + 30
    while time.time() < deadline:
        for line in job.log.read_text(errors="replace").splitlines():
            if "joining as a group member" in line:
                return line.split('member="')[1].split('"')[0]
        time.sleep(0.2)
    raise AssertionError(f"no member id in {job.log}")


def wait_owners(warehouse, check, what, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            if check(owners(warehouse)):
                return
        except (ValueError, KeyError):
            pass  # no group snapshot yet
        assert time.time() < deadline, what
        time.sleep(0.3)


def stamp(line):
    """The event time of a well-formed line (the generator writes some that are not)."""
    try:
        event = json.loads(line)
        return int(event["event_timestamp"])
    except (ValueError, KeyError, TypeError):
        return 0


def real_sessions(warehouse):
    return sorted(tuple(tuple(r[c]) if isinstance(r[c], list) else r[c] for c in SESSION_COLUMNS)
                  for r in read_table(warehouse) if not r["uuid"].startswith("flush-"))


def member(binary, broker, tmp_path, name, *flags):  # noqa: F811
    return Job(binary, broker, "clicks", tmp_path / "fleet", tmp_path / name,
               "--scale-out", *GROUP, *PACE, *flags)


def wait_for_sessions(warehouse, count, members, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if len(real_sessions(warehouse)) >= count:
                return
        except Exception:  # noqa: BLE001  (the table may not exist yet)
            pass
        for m in members:
            assert m.proc.poll() is None, f"member exited: {m.log.read_text()[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"{len(real_sessions(warehouse))} of {count} sessions after {timeout}s")


def owners(warehouse):
    """Partition -> owner as the group's newest snapshot says."""
    table = catalog(warehouse).load_table("sessions.user_sessions")
    group = [s for s in table.snapshots() if s.summary.get("sessionize.group") == "fleet"]
    newest = max(group, key=lambda s: s.sequence_number)
    return {int(p): e["owner"] for p, e in json.loads(newest.summary["sessionize.partitions"]).items()}


def is_flusher(row):
    return row["uuid"].startswith("flush-")


def assert_model(broker, warehouse, count=None):  # noqa: F811
    """The table equals the model over the topic as read back, each partition
    with its own watermark (a member runs one engine per partition); returns
    the model."""
    count = count if count is not None else topic_size(broker.servers, "clicks")
    model = sessionize_records(read_topic(broker.servers, "clicks", count), watermark="own")
    matches(read_table(warehouse), model.sessions, skip=is_flusher)
    return model


def no_session_twice(warehouse):
    ids = [r["session_id"] for r in read_table(warehouse)]
    assert len(ids) == len(set(ids)), "a session was written twice"


def topic_agrees_with_table(broker, warehouse):  # noqa: F811
    """The sessions topic holds every session of the table, each with the
    table's content, and nothing else: a repeat (a record produced before a
    crash or a refused commit) is the same session with the same content."""
    by_id = {}
    for key, value, _ in read_all(broker.servers, "sessions"):
        assert key == value["uuid"]
        assert by_id.setdefault(value["session_id"], value) == value, "a repeat that differs"
    table = {r["session_id"]: {c: r[c] for c in SESSION_COLUMNS} for r in read_table(warehouse)}
    topic = {s: as_table_row(v) for s, v in by_id.items()}
    assert topic.keys() == table.keys(), (
        f"{len(table.keys() - topic.keys())} sessions of the table not in the topic, "
        f"{len(topic.keys() - table.keys())} in the topic only")
    assert topic == table


def stop(*members):
    for m in members:
        if m.proc.poll() is None:
            m.proc.send_signal(signal.SIGTERM)
    for m in members:
        m.proc.wait(60)


def test_members_share_the_topic_and_a_killed_ones_partitions_move_with_their_sessions(
        run, binary, broker, tmp_path):  # noqa: F811
    expected, rest = prepare(run, tmp_path, broker)
    assert len(expected) > 3000
    fleet = tmp_path / "fleet"
    a = member(binary, broker, tmp_path, "a", *TO_TOPIC)
    a.wait_consumed(5000)
    b = member(binary, broker, tmp_path, "b", *TO_TOPIC)
    ida, idb = member_id(a), member_id(b)
    # B joins: the group splits the partitions, B claims its share.
    wait_owners(fleet, lambda o: set(o.values()) == {ida, idb}, "B never claimed a partition")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    a2 = member(binary, broker, tmp_path, "a2", *TO_TOPIC)
    ida2 = member_id(a2)
    # After the session timeout, A's partitions go to the survivors, with
    # their open sessions; then the second half of the input comes.
    wait_owners(fleet, lambda o: ida not in o.values() and ida2 in o.values(),
                "the killed member's partitions never moved to the restarted one")
    rest()
    wait_for_sessions(fleet, len(expected), [b, a2])
    time.sleep(2)
    stop(b, a2)

    no_session_twice(fleet)
    assert real_sessions(fleet) == expected
    assert_model(broker, fleet)
    topic_agrees_with_table(broker, fleet)
    restored = "partitions claimed and restored"
    assert restored in b.log.read_text() and restored in a2.log.read_text()
    # Replaced state files are deleted: beside each partition's chain, at most
    # the one file the killed member wrote and never committed.
    table = catalog(fleet).load_table("sessions.user_sessions")
    newest = max((s for s in table.snapshots() if s.summary.get("sessionize.group") == "fleet"),
                 key=lambda s: s.sequence_number)
    progress = json.loads(newest.summary["sessionize.partitions"])
    extra = 0
    for p, entry in progress.items():
        chain = entry["state"]
        named = {f"{chain['epoch']}-{seq}.state" for seq in range(chain["first"], chain["last"] + 1)}
        files = {f.name for f in (fleet / "sessions/user_sessions/sessionize-state/fleet" / p).iterdir()}
        assert named <= files, (p, named - files)
        extra += len(files - named)
    assert extra <= 8, f"{extra} state files no summary names"


def test_two_members_killed_twenty_times_lose_nothing_and_write_nothing_twice(
        run, binary, broker, tmp_path):  # noqa: F811
    """Today's kill -9 test with two members: 20 times, one of them (in turn)
    is SIGKILLed at a random moment while it works, and started again."""
    path = tmp_path / "events.jsonl"
    # Two events a second: sessions close all along, so kills land in
    # commits that carry sessions and dead letters, not only state.
    run("generate", "--output", path, "--num-users", "2000", "--rate", "2", "--duration", "12h",
        "--late-rate", "0", "--seed", "8", "--events", "42000")
    lines = path.read_text().splitlines(keepends=True)
    last = max(stamp(line) for line in lines)
    flush = flushers(last)
    everything = tmp_path / "all.jsonl"
    everything.write_text("".join(lines) + flush)
    run("run", "--input", everything, "--warehouse", tmp_path / "bounded")
    slices = [lines[len(lines) * i // 21: len(lines) * (i + 1) // 21] for i in range(21)]
    slices[-1].append(flush)

    def produce(i):
        part = tmp_path / f"slice{i}.jsonl"
        part.write_text("".join(slices[i]))
        run("produce", "--kafka-servers", broker.servers, "--topic", "clicks", "--partitions", "8",
            "--input", part)

    produce(0)
    fleet, rng = tmp_path / "fleet", random.Random(99)
    members = [member(binary, broker, tmp_path, "m0"), member(binary, broker, tmp_path, "m1")]
    for kill in range(20):
        produce(kill + 1)
        victim = members[kill % 2]
        before = victim.consumed()
        # At a random moment while it works: after it has taken in some of
        # the new slice, anywhere in its cycle of polls, state writes and commits.
        # 180 s: the suite now runs a CPU-bound test beside this one, and a
        # victim restarted under that load failed a 60 s wait twice in five runs.
        deadline = time.time() + 180
        while victim.consumed() <= before:
            assert victim.proc.poll() is None, victim.log.read_text()[-3000:]
            assert time.time() < deadline, f"kill {kill}: the victim made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        members[kill % 2] = member(binary, broker, tmp_path, f"m{kill + 2}")
    expected = real_sessions(tmp_path / "bounded")
    wait_for_sessions(fleet, len(expected), members)
    time.sleep(2)
    stop(*members)

    no_session_twice(fleet)
    assert real_sessions(fleet) == expected
    dead = lambda w: sorted((r["raw"], r["reason"]) for r in read_table(w, "sessions.rejected_events"))
    assert dead(fleet) == dead(tmp_path / "bounded")
    model = assert_model(broker, fleet)
    assert dead_positions(read_table(fleet, "sessions.rejected_events")) == model.dead


def log_time_ms(job, text):
    """Wall-clock time (ms) of the first line of `job`'s log holding `text`, or None."""
    from datetime import datetime
    for line in job.log.read_text(errors="replace").splitlines():
        if text in line:
            stamp = line.split()[0].rstrip("Z")[:26]
            return datetime.fromisoformat(stamp + "+00:00").timestamp() * 1000
    return None


def test_a_frozen_member_publishes_nothing_for_the_partitions_it_lost(
        run, binary, broker, tmp_path):  # noqa: F811
    """A is frozen (SIGSTOP) past the session timeout; the broker evicts it,
    B claims its partitions and commits their sessions; A is resumed
    (SIGCONT) and, before it notices, tries to go on: its commits for the
    partitions it lost must be refused. Both members also send sessions to a
    topic: what A sent for those partitions repeats B's sessions exactly."""
    expected, rest = prepare(run, tmp_path, broker)
    fleet = tmp_path / "fleet"
    a = member(binary, broker, tmp_path, "a", *TO_TOPIC)
    a.wait_consumed(5000)
    b = member(binary, broker, tmp_path, "b", *TO_TOPIC)
    ida, idb = member_id(a), member_id(b)
    wait_owners(fleet, lambda o: set(o.values()) == {ida, idb}, "B never claimed a partition")
    a_held = {p for p, owner in owners(fleet).items() if owner == ida}

    a.proc.send_signal(signal.SIGSTOP)
    stopped_ms = time.time() * 1000
    try:
        wait_owners(fleet, lambda o: set(o.values()) == {idb},
                    "the frozen member's partitions never moved", timeout=90)
        # The rest of the input: B commits sessions of A's old partitions.
        rest()
        wait_for_sessions(fleet, len(expected), [b])
    finally:
        a.proc.send_signal(signal.SIGCONT)
    resumed_ms = time.time() * 1000
    # A goes on with the partitions it lost and tries to commit for them (its
    # last checkpoint before the group tells it, or the one it cuts to hand
    # them over): the commit must be refused by the fence, not merely never made.
    deadline = time.time() + 60
    noticed = None
    while noticed is None and time.time() < deadline:
        noticed = log_time_ms(a, "partitions were claimed by another member")
        time.sleep(0.3)
    assert noticed and noticed > stopped_ms, f"no refused commit: {a.log.read_text()[-3000:]}"
    refused = [line for line in a.log.read_text().splitlines()
               if "partitions were claimed by another member" in line]
    lost = {int(p) for p in refused[0].split("partitions=[")[1].split("]")[0].split(", ")}
    assert lost and lost <= a_held, (lost, a_held)
    time.sleep(3)
    stop(a, b)

    # Nothing of A's landed between its freeze and its noticing; what it
    # published afterwards it had claimed again, and the table is exact.
    table = catalog(fleet).load_table("sessions.user_sessions")
    zombie = [s for s in table.snapshots()
              if s.summary.get("sessionize.job-id") == ida
              and stopped_ms < s.timestamp_ms <= max(noticed, resumed_ms)]
    assert zombie == [], [s.summary for s in zombie]
    assert a_held
    no_session_twice(fleet)
    assert real_sessions(fleet) == expected
    assert_model(broker, fleet)
    # What A produced for the partitions it lost, before its refused commit,
    # repeats B's sessions exactly.
    topic_agrees_with_table(broker, fleet)
