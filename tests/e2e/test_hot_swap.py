"""Hot swap while events stream from Kafka: default rules -> logout rules -> back,
with the admin endpoint's guards and a refused candidate along the way."""

import os
import signal
import stat
import time
import urllib.error
import urllib.request

from conftest import ROOT, catalog, read_table
from reference import sessionize
from test_streaming import broker, generate, produce  # noqa: F401  (fixture)
from kafka import Job

DIST = ROOT / "guest" / "dist"


def plugin(run, state, *args, check=True):
    return run("plugin", *args, "--state-dir", state, check=check)


def test_swap_to_logout_rules_and_back_loses_nothing(run, binary, broker, tmp_path):  # noqa: F811
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "500", "--rate", "20", "--duration", "12h",
             "--late-rate", "0", "--seed", "21", "--events", "30000")
    lines = events.read_text().splitlines(keepends=True)
    parts = [lines[:10000], lines[10000:20000], lines[20000:]]
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"part{i}.jsonl")
        paths[-1].write_text("".join(part))
    state = tmp_path / "state"
    produce(run, broker, "clicks", paths[0])
    job = Job(binary, broker, "clicks", tmp_path / "wh", state, "--checkpoint-interval", "300ms")
    job.wait_consumed(10000)

    # The endpoint wants the token, kept owner-only.
    token_file = state / "admin.token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    addr = (state / "admin.addr").read_text().strip()
    assert addr.startswith("127.0.0.1:")
    try:
        urllib.request.urlopen(f"http://{addr}/plugin/status", timeout=5)
        raise AssertionError("status without a token was answered")
    except urllib.error.HTTPError as e:
        assert e.code == 401

    # A file that is not a rules component is refused; the running rules stay.
    bogus = tmp_path / "bogus.wasm"
    bogus.write_bytes(b"\0asm\x01\0\0\0")
    refused = plugin(run, state, "deploy", bogus, check=False)
    assert refused.returncode != 0
    assert "not a Sessionize rules component" in refused.stderr.decode()
    assert "default-rules@" in plugin(run, state, "status").stdout.decode()

    deployed = plugin(run, state, "deploy", DIST / "logout_rules.wasm").stdout.decode()
    assert "logout-rules@" in deployed
    produce(run, broker, "clicks", paths[1])
    job.wait_consumed(20000)
    assert "default-rules@" in plugin(run, state, "rollback").stdout.decode()
    status = plugin(run, state, "status").stdout.decode()
    for action in ("started", "refused", "deployed", "rolled back"):
        assert action in status, status
    produce(run, broker, "clicks", paths[2])
    job.wait_consumed(30000)
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    Job(binary, broker, "clicks", tmp_path / "wh", state, "--test-mode").wait()

    rows = read_table(tmp_path / "wh")
    versions = {r["rule_version"].split("+")[0] for r in rows}
    assert versions == {"default-rules@0.1.0", "logout-rules@0.1.0"}, versions
    logout = [r for r in rows if r["end_reason"] == "logout"]
    assert logout, "the logout rules never cut a session"
    assert all(r["rule_version"].startswith("logout-rules@") for r in logout)
    assert all(r["pages_visited"] and "logout" in r["pages_visited"] for r in logout)
    # Nothing lost, nothing twice: every accepted event is in exactly one session.
    expected = sessionize(lines)
    assert sum(r["event_count"] for r in rows) == expected.accepted
    ids = [r["session_id"] for r in rows]
    assert len(ids) == len(set(ids))
    snapshots = {s.summary.get("sessionize.rule-version", "").split("+")[0]
                 for s in catalog(tmp_path / "wh").load_table("sessions.user_sessions").snapshots()}
    assert {"default-rules@0.1.0", "logout-rules@0.1.0"} <= snapshots


def test_a_trapping_plugin_is_rolled_back_and_its_batch_kept(run, binary, broker, tmp_path):  # noqa: F811
    start, minute = 1_735_689_600_000, 60_000

    def event(user, i, t, page):
        return ('{"uuid":"%s","event_id":"%s%d","event_timestamp":%d,"page_name":"%s"}\n'
                % (user, user, i, start + t * minute, page))

    before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
    before.write_text("".join(event("u%d" % u, 0, u, "home") for u in range(20)))
    # "boom" makes the faulty plugin trap on every attempt.
    # Later events for 40 users reach every partition, so the watermark passes bob.
    clock = "".join(event("c%d" % u, 1, 60, "home") for u in range(40))
    after.write_text(event("bob", 1, 30, "home") + event("bob", 2, 31, "boom")
                     + event("carol", 1, 32, "home") + clock)
    state = tmp_path / "state"
    produce(run, broker, "clicks", before)
    job = Job(binary, broker, "clicks", tmp_path / "wh", state, "--checkpoint-interval", "200ms",
              "--allowed-lateness", "1")
    job.wait_consumed(20)
    assert "faulty@" in plugin(run, state, "deploy", DIST / "faulty.wasm").stdout.decode()
    produce(run, broker, "clicks", after)
    job.wait_consumed(63)
    deadline = time.time() + 30
    while "rolled back" not in (status := plugin(run, state, "status").stdout.decode()):
        assert time.time() < deadline, status
        time.sleep(0.2)
    assert "trapped" in status, status
    assert '"active": "default-rules@' in status
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    assert "faulty plugin: boom" in job.log.read_text()  # the guest's panic, in the host log
    Job(binary, broker, "clicks", tmp_path / "wh", state, "--test-mode").wait()
    rows = read_table(tmp_path / "wh")
    assert sum(r["event_count"] for r in rows) == 63
    bob = [r for r in rows if r["uuid"] == "bob"]
    assert [(r["event_count"], r["rule_version"].split("@")[0]) for r in bob] == [(2, "default-rules")]
