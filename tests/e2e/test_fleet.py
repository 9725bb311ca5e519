"""Three members of one consumer group on a real broker, through every change
of membership and a deploy: one starts, two join while it runs, new rules are
deployed to one member and reach all (and so does a rollback), one is SIGKILLed and comes back (with
the group's rules, not its command line's), another leaves on SIGTERM. The
table, read back by pyiceberg, must equal a bounded run over the same events,
with no session written twice, and every row made by rules the group had
deployed by then."""

import json
import signal
import time

from conftest import catalog, read_table
from reference import matches, sessionize
from test_hot_swap import DIST, plugin
from test_scale_out import (assert_model, flushers, member, member_id, no_session_twice,
                            real_sessions, stamp, stop, wait_for_sessions, wait_owners)
from test_streaming import broker  # noqa: F401  (fixture)

LOGOUT = "logout-rules@"


def prepare(run, tmp_path, broker):  # noqa: F811
    """60,000 generated events in three parts, then the flushers. The logout
    page is renamed, so the logout rules deployed in the middle close the
    same sessions as the default rules: the result cannot depend on when
    each member swapped. Returns the expected sessions and a producer."""
    path = tmp_path / "events.jsonl"
    # Two events a second: the 60,000 span 8 hours of event time, so sessions
    # close (by the defaults) before the deploy as well as after it.
    run("generate", "--output", path, "--num-users", "2000", "--rate", "2", "--duration", "12h",
        "--late-rate", "0", "--seed", "33", "--events", "60000")
    text = path.read_text().replace('"page_name":"logout"', '"page_name":"signout"')
    assert '"logout"' not in text
    lines = text.splitlines(keepends=True)
    last = max(stamp(line) for line in lines)
    flush = flushers(last)
    third = len(lines) // 3
    parts = [lines[:third], lines[third:2 * third], lines[2 * third:] + [flush]]
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"part{i}.jsonl")
        paths[-1].write_text("".join(part))
    both = tmp_path / "all.jsonl"
    both.write_text("".join("".join(p) for p in parts))
    run("run", "--input", both, "--warehouse", tmp_path / "bounded")
    matches(read_table(tmp_path / "bounded"), sessionize(both.read_text().splitlines()).sessions)

    def produce(i):
        run("produce", "--kafka-servers", broker.servers, "--topic", "clicks", "--partitions", "8",
            "--input", paths[i])

    return real_sessions(tmp_path / "bounded"), produce


def group_snapshots(warehouse):
    table = catalog(warehouse).load_table("sessions.user_sessions")
    return sorted((s for s in table.snapshots() if s.summary.get("sessionize.group") == "fleet"),
                  key=lambda s: s.sequence_number)


def members_rules(warehouse):
    """Member -> rules it runs, for the members owning partitions now."""
    newest = group_snapshots(warehouse)[-1].summary
    owners = {e["owner"] for e in json.loads(newest["sessionize.partitions"]).values()}
    members = json.loads(newest.get("sessionize.members", "{}"))
    return {m: members.get(m, {}).get("rules", "") for m in owners}


def wait_until(check, what, timeout=90):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, what
        time.sleep(0.3)


def test_three_members_come_and_go_and_a_deploy_reaches_all(
        run, binary, broker, tmp_path):  # noqa: F811
    expected, produce = prepare(run, tmp_path, broker)
    fleet = tmp_path / "fleet"
    produce(0)
    a = member(binary, broker, tmp_path, "a")
    a.wait_consumed(3000)
    b, c = member(binary, broker, tmp_path, "b"), member(binary, broker, tmp_path, "c")
    ida, idb, idc = member_id(a), member_id(b), member_id(c)
    wait_owners(fleet, lambda o: set(o.values()) == {ida, idb, idc},
                "the joining members never got partitions")
    # Claims carry no rule version; the members' commits do.
    versions = [s.summary.get("sessionize.rule-version") for s in group_snapshots(fleet)]
    v1 = [v for v in versions if v][-1]
    assert v1.startswith("default-rules@")

    # New rules to one member: every member takes them up.
    deployed_at = time.time() * 1000
    out = plugin(run, tmp_path / "a", "deploy", DIST / "logout_rules.wasm").stdout.decode()
    assert LOGOUT in out
    wait_until(lambda: all(r.startswith(LOGOUT) for r in members_rules(fleet).values()),
               f"the deploy did not reach every member: {members_rules(fleet)}")
    everyone_at = time.time() * 1000
    status = json.loads(plugin(run, tmp_path / "c", "status").stdout)
    v2 = status["active"]
    assert v2.startswith(LOGOUT) and status["group"]["rules"]["version"] == v2
    assert {idb, idc} <= set(status["group"]["members"]), status["group"]
    produce(1)

    # B is killed; its partitions move after the session timeout. It comes
    # back with the group's rules, not the default ones its command line gives.
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    wait_owners(fleet, lambda o: idb not in o.values(), "the killed member's partitions never moved")
    b2 = member(binary, broker, tmp_path, "b2")
    idb2 = member_id(b2)
    wait_owners(fleet, lambda o: idb2 in o.values(), "the restarted member never got partitions")
    assert "starting with the group's rules" in b2.log.read_text()

    # C leaves cleanly: its last checkpoint hands its partitions over.
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(60) == 0, c.log.read_text()[-3000:]
    wait_owners(fleet, lambda o: idc not in o.values(), "the stopped member's partitions never moved")
    produce(2)
    wait_for_sessions(fleet, len(expected), [a, b2])
    time.sleep(2)
    # A rollback on one member reaches the others too.
    assert v1 in plugin(run, tmp_path / "a", "rollback").stdout.decode()
    wait_until(lambda: set(members_rules(fleet).values()) == {v1},
               f"the rollback did not reach every member: {members_rules(fleet)}")
    stop(a, b2)

    no_session_twice(fleet)
    assert real_sessions(fleet) == expected
    assert_model(broker, fleet)
    # Every row's rules were the group's at its commit: only the defaults
    # before the deploy, only the new rules once every member had them.
    snapshots = group_snapshots(fleet)
    for s in snapshots:
        version = s.summary.get("sessionize.rule-version")
        if version is None or s.summary.get("sessionize.sink.session-rows", "0") == "0":
            continue
        if s.timestamp_ms < deployed_at:
            assert version == v1, (s.timestamp_ms, version)
        elif s.timestamp_ms > everyone_at:
            assert version == v2, (s.timestamp_ms, version)
        else:
            assert version in (v1, v2), version
    rows = catalog(fleet).load_table("sessions.user_sessions").scan(
        selected_fields=("rule_version",)).to_arrow().column("rule_version").to_pylist()
    assert set(rows) == {v1, v2}
