"""A fleet run the way operators run it: maintenance while the group is
stopped, rollbacks sent to a member that restarted, a member that cannot use
the group's rules, a partition whose state cannot be read, many restarts, a
catalog that loses a commit it reported, and clocks that disagree. Each test
compares the table, read back by pyiceberg, with the reference model over the
records read back from the topic (reference.py), never with another run of
the engine."""

import json
import os
import signal
import time
import urllib.error
import urllib.request

import psycopg

from conftest import catalog, clock_shifted, read_table
from kafka import Job
from reference import matches, read_topic, sessionize_records
from test_hot_swap import DIST, plugin
from test_scale_out import (GROUP, PACE, flushers, member, member_id, owners, stamp, stop,
                            wait_owners)
from test_streaming import broker  # noqa: F401  (fixture)

FLUSH = lambda row: row["uuid"].startswith("flush-")  # noqa: E731


def events(run, tmp_path, n=20000, seed=31):
    """Generated events, the logout page renamed (so the default and the logout
    rules cut the same sessions), in two halves; the second ends with the
    flushers. Returns the two paths."""
    path = tmp_path / "events.jsonl"
    run("generate", "--output", path, "--num-users", "1500", "--rate", "2", "--duration", "12h",
        "--late-rate", "0", "--seed", str(seed), "--events", str(n))
    text = path.read_text().replace('"page_name":"logout"', '"page_name":"signout"')
    lines = text.splitlines(keepends=True)
    last = max(stamp(line) for line in lines)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(lines[: len(lines) // 2]))
    second.write_text("".join(lines[len(lines) // 2:]) + flushers(last))
    return first, second


def produce(run, broker, path, partitions=4):  # noqa: F811
    run("produce", "--kafka-servers", broker.servers, "--topic", "clicks", "--partitions",
        str(partitions), "--input", path)


def lines_in(*paths):
    return sum(1 for p in paths for line in open(p) if line.strip())


def expected(broker, *paths):  # noqa: F811
    """The model over every record of the topic, each partition its own watermark."""
    records = read_topic(broker.servers, "clicks", lines_in(*paths))
    return sessionize_records(records, watermark="own")


def real(sessions):
    """The sessions of real users, not of the flushers."""
    return [s for s in sessions if not FLUSH(s)]


def users_on(records, partition):
    users = set()
    for p, _, raw in records:
        try:
            event = json.loads(raw)
            if p == partition and isinstance(event, dict):
                users.add(event.get("uuid"))
        except ValueError:
            pass
    return users


def wait_sessions(rows_of, count, members, timeout=240):
    deadline = time.time() + timeout
    while True:
        try:
            if len([r for r in rows_of() if not FLUSH(r)]) >= count:
                return
        except Exception:  # noqa: BLE001  (the table may not exist yet)
            pass
        for m in members:
            assert m.proc.poll() is None, f"member exited: {m.log.read_text()[-3000:]}"
        assert time.time() < deadline, f"fewer than {count} sessions after {timeout}s"
        time.sleep(1)


def group_snapshots(warehouse):
    table = catalog(warehouse).load_table("sessions.user_sessions")
    return sorted((s for s in table.snapshots() if s.summary.get("sessionize.group") == "fleet"),
                  key=lambda s: s.sequence_number)


def group_rules(warehouse):
    return json.loads(group_snapshots(warehouse)[-1].summary["sessionize.fleet-rules"])


def wait_until(check, what, timeout=90):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, what
        time.sleep(0.3)


def metrics_addr(state):
    path = state / "metrics.addr"
    wait_until(lambda: path.exists() and path.read_text().strip(), "no metrics address")
    return path.read_text().strip()


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_maintenance_after_a_long_weekend_keeps_the_groups_state_and_rules(
        run, binary, broker, tmp_path):  # noqa: F811
    """The group stopped with open sessions and deployed rules; every file of
    the warehouse is four days old when `sessionize maintain` runs with its
    defaults. A member started afterwards resumes with both."""
    first, second = events(run, tmp_path)
    produce(run, broker, first)
    fleet = tmp_path / "fleet"
    a = member(binary, broker, tmp_path, "a")
    a.wait_consumed(lines_in(first))
    assert "logout-rules@" in plugin(run, tmp_path / "a", "deploy",
                                     DIST / "logout_rules.wasm").stdout.decode()
    wait_until(lambda: group_rules(fleet)["version"].startswith("logout-rules@"),
               "the deploy never reached the group's record")
    stop(a)
    assert a.proc.returncode == 0, a.log.read_text()[-3000:]
    state_files = list(fleet.rglob("sessionize-state/**/*.state"))
    assert state_files and list(fleet.rglob("sessionize-rules/**/*.wasm"))

    weekend = time.time() - 4 * 86400
    for path in fleet.rglob("*"):
        if path.is_file():
            os.utime(path, (weekend, weekend))
    out = run("maintain", "--warehouse", fleet).stdout.decode()
    assert all(p.exists() for p in state_files), out
    assert list(fleet.rglob("sessionize-rules/**/*.wasm")), out

    b = member(binary, broker, tmp_path, "b")
    produce(run, broker, second)
    model = expected(broker, first, second)
    wait_sessions(lambda: read_table(fleet), len(real(model.sessions)), [b])
    time.sleep(2)
    stop(b)
    assert "starting with the group's rules" in b.log.read_text()
    matches(read_table(fleet), model.sessions, skip=FLUSH)


def test_a_rollback_sent_to_a_restarted_member_goes_to_the_groups_previous_rules(
        run, binary, broker, tmp_path):  # noqa: F811
    """B restarts with other rules on its command line (it comes up with the
    group's); a rollback sent to it takes the group back to the rules before
    the deploy, not to the ones B's command line gave."""
    first, second = events(run, tmp_path)
    produce(run, broker, first)
    fleet = tmp_path / "fleet"
    a = member(binary, broker, tmp_path, "a")
    a.wait_consumed(2000)
    b = member(binary, broker, tmp_path, "b")
    ida, idb = member_id(a), member_id(b)
    wait_owners(fleet, lambda o: set(o.values()) == {ida, idb}, "B never claimed a partition")
    # A's per-partition gauges are its own partitions' only: after the
    # rebalance, two members reporting one partition would add up wrong.
    addr = metrics_addr(tmp_path / "a")

    def gauged(name):
        lines = get(f"http://{addr}/metrics")[1].splitlines()
        return {int(line.split('partition="')[1].split('"')[0])
                for line in lines if line.startswith(name + "{")}

    held_by_a = lambda: {p for p, o in owners(fleet).items() if o == ida}  # noqa: E731
    wait_until(lambda: gauged("sessionize_consumer_lag") == held_by_a(),
               f"A reports lag for {gauged('sessionize_consumer_lag')}, holds {held_by_a()}")
    assert gauged("sessionize_committed_offset") <= held_by_a()
    before = group_rules(fleet)["version"]
    assert before.startswith("default-rules@")
    plugin(run, tmp_path / "a", "deploy", DIST / "logout_rules.wasm")
    wait_until(lambda: group_rules(fleet)["version"].startswith("logout-rules@"),
               "the deploy never reached the group's record")
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    b2 = Job(binary, broker, "clicks", fleet, tmp_path / "b2", "--scale-out", *GROUP, *PACE,
             "--plugin", DIST / "conversion_rules.wasm")
    wait_until(lambda: "starting with the group's rules" in b2.log.read_text(),
               "B2 did not come up with the group's rules")
    out = plugin(run, tmp_path / "b2", "rollback").stdout.decode()
    assert before in out, out
    wait_until(lambda: group_rules(fleet)["version"] == before,
               f"the group did not go back to {before}: {group_rules(fleet)}")
    produce(run, broker, second)
    model = expected(broker, first, second)
    wait_sessions(lambda: read_table(fleet), len(real(model.sessions)), [a, b2])
    time.sleep(2)
    stop(a, b2)
    rules = {r["rule_version"].split("+")[0] for r in read_table(fleet)}
    assert not any(v.startswith("conversion-rules@") for v in rules), rules
    matches(read_table(fleet), model.sessions, skip=FLUSH)


def padded(component, to_bytes):
    """`component` with a custom section that makes it `to_bytes` long: the
    same rules, another hash and size."""
    body = b"\x07padding" + b"\0" * (to_bytes - len(component) - 16)
    size, leb = len(body), b""
    while True:
        byte, size = size & 0x7F, size >> 7
        leb += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return component + b"\x00" + leb + body


def test_a_member_that_cannot_use_the_groups_rules_runs_with_its_own_and_says_so(
        run, binary, broker, tmp_path):  # noqa: F811
    """The group's rules are larger than B's --max-component-mib: B starts
    with its command line's rules, keeps running, and says so in plugin
    status, /readyz and a metric."""
    first, second = events(run, tmp_path)
    produce(run, broker, first)
    fleet = tmp_path / "fleet"
    big = tmp_path / "logout_big.wasm"
    big.write_bytes(padded((DIST / "logout_rules.wasm").read_bytes(), 3 << 20))
    a = member(binary, broker, tmp_path, "a")
    a.wait_consumed(2000)
    plugin(run, tmp_path / "a", "deploy", big)
    wait_until(lambda: group_rules(fleet)["version"].startswith("logout-rules@"),
               "the deploy never reached the group's record")
    b = Job(binary, broker, "clicks", fleet, tmp_path / "b", "--scale-out", *GROUP, *PACE,
            "--max-component-mib", "1")
    idb = member_id(b)
    wait_owners(fleet, lambda o: idb in o.values(), "B never claimed a partition")
    status = json.loads(plugin(run, tmp_path / "b", "status").stdout)
    assert status["active"].startswith("default-rules@"), status
    assert "max-component-mib" in json.dumps(status["group"]), status
    addr = metrics_addr(tmp_path / "b")
    code, body = get(f"http://{addr}/readyz")
    assert code == 503 and "group's rules" in body, (code, body)
    _, metrics = get(f"http://{addr}/metrics")
    assert "sessionize_group_rules_followed 0" in metrics
    produce(run, broker, second)
    model = expected(broker, first, second)
    wait_sessions(lambda: read_table(fleet), len(real(model.sessions)), [a, b])
    time.sleep(2)
    stop(a, b)
    matches(read_table(fleet), model.sessions, skip=FLUSH)


def test_a_partition_whose_state_cannot_be_read_is_paused_and_the_rest_go_on(
        run, binary, broker, tmp_path):  # noqa: F811
    """Partition 0's newest state file is garbage: two members start, neither
    dies; partition 0 is paused and reported while the others commit, and it
    goes on once the file is put back."""
    first, second = events(run, tmp_path)
    produce(run, broker, first)
    fleet = tmp_path / "fleet"
    a = member(binary, broker, tmp_path, "a")
    a.wait_consumed(lines_in(first))
    stop(a)
    on_zero = users_on(read_topic(broker.servers, "clicks", lines_in(first)), 0)
    before = sorted(r["session_id"] for r in read_table(fleet) if r["uuid"] in on_zero)
    chain = json.loads(group_snapshots(fleet)[-1].summary["sessionize.partitions"])["0"]["state"]
    bad = fleet / "sessions/user_sessions/sessionize-state/fleet/0" / \
        f"{chain['epoch']}-{chain['last']}.state"
    good = bad.read_bytes()
    bad.write_bytes(b"not a state file")
    produce(run, broker, second)
    b, c = member(binary, broker, tmp_path, "b"), member(binary, broker, tmp_path, "c")
    idb, idc = member_id(b), member_id(c)
    model = expected(broker, first, second)
    on_zero |= users_on(read_topic(broker.servers, "clicks", lines_in(first, second)), 0)
    elsewhere = [s for s in real(model.sessions) if s["uuid"] not in on_zero]
    assert on_zero and elsewhere
    rows_elsewhere = lambda: [r for r in read_table(fleet) if r["uuid"] not in on_zero]  # noqa: E731
    wait_sessions(rows_elsewhere, len(elsewhere), [b, c])
    addrs = [metrics_addr(tmp_path / "b"), metrics_addr(tmp_path / "c")]
    reporting = lambda: [a for a in addrs if "partition 0 is paused" in get(f"http://{a}/readyz")[1]]  # noqa: E731,E501
    wait_until(reporting, "no member reports partition 0 as unreadable")
    addr = reporting()[0]
    code, body = get(f"http://{addr}/readyz")
    assert code == 503 and "cannot be read" in body, (code, body)
    _, metrics = get(f"http://{addr}/metrics")
    assert "sessionize_partitions_unreadable 1" in metrics
    _, page = get(f"http://{addr}/")
    assert "partition 0" in page
    assert owners_of(fleet, 0) in (idb, idc)
    # Nothing of partition 0 committed since its state became unreadable.
    assert sorted(r["session_id"] for r in read_table(fleet) if r["uuid"] in on_zero) == before

    bad.write_bytes(good)
    wait_sessions(lambda: read_table(fleet), len(real(model.sessions)), [b, c], timeout=180)
    time.sleep(2)
    stop(b, c)
    matches(read_table(fleet), model.sessions, skip=FLUSH)


def owners_of(warehouse, partition):
    entry = json.loads(group_snapshots(warehouse)[-1].summary["sessionize.partitions"])
    return entry[str(partition)]["owner"]


def test_expiry_keeps_the_groups_newest_snapshot_not_one_per_restart(
        run, binary, broker, tmp_path):  # noqa: F811
    first, second = events(run, tmp_path, n=4000)
    produce(run, broker, first)
    fleet = tmp_path / "fleet"
    for i in range(4):
        m = member(binary, broker, tmp_path, f"m{i}")
        m.wait_consumed(1)
        time.sleep(1)
        stop(m)
    members = {s.summary.get("sessionize.job-id") for s in group_snapshots(fleet)} - {None}
    assert len(members) == 4, members
    run("maintain", "--warehouse", fleet, "--keep-snapshots-for", "1ms", "--keep-snapshots", "1",
        "--no-compaction")
    left = group_snapshots(fleet)
    assert len(left) == 1, [s.summary.get("sessionize.job-id") for s in left]
    # The group goes on from its newest snapshot.
    produce(run, broker, second)
    last = member(binary, broker, tmp_path, "last")
    model = expected(broker, first, second)
    wait_sessions(lambda: read_table(fleet), len(real(model.sessions)), [last])
    time.sleep(2)
    stop(last)
    matches(read_table(fleet), model.sessions, skip=FLUSH)


FAIL_COMMITS = """
CREATE SEQUENCE failed_commits;
CREATE FUNCTION fail_commit() RETURNS trigger AS $$
BEGIN
  IF NEW.table_name = 'user_sessions' AND nextval('failed_commits') <= {n} THEN
    RAISE EXCEPTION 'injected: the commit of this transaction fails';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER fail_at_commit AFTER UPDATE ON iceberg_tables
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit();
"""


def test_a_commit_the_catalog_reports_but_does_not_keep_is_made_again(
        run, binary, broker, lakehouse, tmp_path):  # noqa: F811
    """PostgreSQL fails the COMMIT of three metadata pointer updates of the
    sessions table (a deferred constraint trigger: the UPDATE itself goes
    through, the transaction does not). A member must not take them for
    commits: nothing lost, nothing twice."""
    first, second = events(run, tmp_path)
    produce(run, broker, first)
    m = Job(binary, broker, "clicks", lakehouse.flags, tmp_path / "m", "--scale-out", *GROUP,
            *PACE, env=lakehouse.env)
    m.wait_consumed(lines_in(first) // 2)
    with psycopg.connect(lakehouse.catalog_uri, autocommit=True) as db:
        db.execute(FAIL_COMMITS.format(n=3))
    produce(run, broker, second)
    model = expected(broker, first, second)
    wait_sessions(lakehouse.read, len(real(model.sessions)), [m])
    time.sleep(3)
    stop(m)
    with psycopg.connect(lakehouse.catalog_uri, autocommit=True) as db:
        failed = db.execute("SELECT last_value FROM failed_commits").fetchone()[0]
    assert failed >= 3, "the injected failures never happened"
    matches(lakehouse.read(), model.sessions, skip=FLUSH)


def test_a_member_whose_clock_is_two_minutes_behind_keeps_committing(
        run, binary, broker, tmp_path):  # noqa: F811
    """Another writer of the table (a bounded run of other users' events)
    runs on a clock two minutes ahead of the member's: its snapshot is
    stamped two minutes after the member's clock. The member's next commits
    must still go through. (librdkafka stalls under libfaketime, so the
    member's own clock cannot be shifted: the other writer's is, which is
    the same skew.)"""
    first, second = events(run, tmp_path)
    produce(run, broker, first)
    fleet = tmp_path / "fleet"
    m = member(binary, broker, tmp_path, "m")
    idm = member_id(m)
    m.wait_consumed(lines_in(first))
    ahead = clock_shifted(os.environ, "+2m")
    other = tmp_path / "other.jsonl"
    other.write_text("".join(
        json.dumps({"uuid": f"ahead-{i}", "event_id": f"a{i}", "event_timestamp": 1_700_000_000_000,
                    "page_name": "home"}) + "\n" for i in range(10)))
    run("run", "--input", other, "--warehouse", fleet, "--state-dir", tmp_path / "other",
        env=ahead)
    table = catalog(fleet).load_table("sessions.user_sessions")
    stamped = max(s.timestamp_ms for s in table.snapshots())
    assert stamped > time.time() * 1000 + 60_000, "the other writer's clock was not ahead"
    produce(run, broker, second)
    model = expected(broker, first, second)
    wait_sessions(lambda: read_table(fleet), len(real(model.sessions)), [m])
    time.sleep(2)
    assert m.proc.poll() is None, m.log.read_text()[-3000:]
    stop(m)
    after = [s for s in group_snapshots(fleet)
             if s.summary.get("sessionize.job-id") == idm and s.timestamp_ms >= stamped]
    assert len(after) > 3, len(after)
    matches(read_table(fleet), model.sessions,
            skip=lambda r: FLUSH(r) or r["uuid"].startswith("ahead-"))


def test_maintenance_on_a_clock_days_ahead_deletes_no_live_file(
        run, binary, broker, tmp_path):  # noqa: F811
    """`sessionize maintain` runs again and again on a machine whose clock is
    four days ahead while a member commits: by its clock every file looks
    older than --orphans-older-than, those of commits in flight included.
    Nothing the table or the group names may go, and the member's commits
    after the maintainer's (stamped four days ahead) must go on."""
    first, second = events(run, tmp_path)
    produce(run, broker, first)
    fleet = tmp_path / "fleet"
    m = member(binary, broker, tmp_path, "m")
    m.wait_consumed(2000)
    ahead = clock_shifted(os.environ, "+4d")
    produce(run, broker, second)
    model = expected(broker, first, second)
    for _ in range(12):
        run("maintain", "--warehouse", fleet, env=ahead)
        time.sleep(0.5)
    wait_sessions(lambda: read_table(fleet), len(real(model.sessions)), [m])
    time.sleep(2)
    stop(m)
    matches(read_table(fleet), model.sessions, skip=FLUSH)
    # The group resumes from what it left: its state chains are all there.
    again = member(binary, broker, tmp_path, "again")
    wait_until(lambda: "partitions claimed and restored" in again.log.read_text(),
               "the restarted member never restored its partitions")
    time.sleep(2)
    assert again.proc.poll() is None, again.log.read_text()[-3000:]
    stop(again)
