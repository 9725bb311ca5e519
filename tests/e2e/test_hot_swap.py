"""Hot swap while events stream from Kafka: default rules -> logout rules -> back,
with the admin endpoint's guards and a refused candidate along the way."""

import os
import signal
import stat
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, catalog, read_table
from reference import sessionize
from test_streaming import broker, generate, produce  # noqa: F401  (fixture)
from kafka import Job

DIST = ROOT / "guest" / "dist"


def event(user, i, minute, page):
    """One event line, `minute` minutes into 2025-01-01."""
    return ('{"uuid":"%s","event_id":"%s%d","event_timestamp":%d,"page_name":"%s"}\n'
            % (user, user, i, 1_735_689_600_000 + minute * 60_000, page))


def plugin(run, state, *args, check=True):
    return run("plugin", *args, "--state-dir", state, check=check)


def test_swap_to_logout_rules_and_back_loses_nothing(run, binary, broker, tmp_path):  # noqa: F811
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "500", "--rate", "2", "--duration", "12h",
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


def start_then_deploy_faulty(run, binary, broker, tmp_path, fault, *flags):
    """20 users, then the faulty plugin deployed live, then bob's "boom" (the
    fault, on every attempt) among 43 more events; returns the job."""
    before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
    before.write_text("".join(event("u%d" % u, 0, u, "home") for u in range(20)))
    # Later events for 40 users reach every partition, so the watermark passes bob.
    clock = "".join(event("c%d" % u, 1, 60, "home") for u in range(40))
    after.write_text(event("bob", 1, 30, "home") + event("bob", 2, 31, "boom")
                     + event("carol", 1, 32, "home") + clock)
    state = tmp_path / "state"
    produce(run, broker, "clicks", before)
    job = Job(binary, broker, "clicks", tmp_path / "wh", state, "--checkpoint-interval", "200ms",
              "--allowed-lateness", "1", "--plugin-param", f"fault={fault}", *flags)
    job.wait_consumed(20)
    assert "faulty@" in plugin(run, state, "deploy", DIST / "faulty.wasm").stdout.decode()
    produce(run, broker, "clicks", after)
    return job


def assert_nothing_lost(binary, broker, tmp_path):
    """A final run of the default rules: every event in a session, bob's cut by them."""
    Job(binary, broker, "clicks", tmp_path / "wh", tmp_path / "state", "--test-mode").wait()
    rows = read_table(tmp_path / "wh")
    assert sum(r["event_count"] for r in rows) == 63
    bob = [r for r in rows if r["uuid"] == "bob"]
    assert [(r["event_count"], r["rule_version"].split("@")[0]) for r in bob] == [(2, "default-rules")]


@pytest.mark.parametrize("fault, reported", [("trap", "trapped"), ("oom", "memory limit of 64 MiB")])
def test_a_failing_plugin_is_rolled_back_and_its_batch_kept(
        run, binary, broker, tmp_path, fault, reported):  # noqa: F811
    state = tmp_path / "state"
    job = start_then_deploy_faulty(run, binary, broker, tmp_path, fault)
    job.wait_consumed(63)
    deadline = time.time() + 30
    while "rolled back" not in (status := plugin(run, state, "status").stdout.decode()):
        assert time.time() < deadline, status
        time.sleep(0.2)
    assert reported in status, status
    assert '"active": "default-rules@' in status
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    log = job.log.read_text()
    # Each failure is reported with the plugin's name and version.
    assert "rules failed a batch" in log and 'rules="faulty@0.1.0+' in log, log
    if fault == "trap":
        assert "faulty plugin: boom" in log  # the guest's panic, in the host log
    assert_nothing_lost(binary, broker, tmp_path)


def test_a_looping_plugin_stops_the_job_at_its_last_checkpoint_when_so_configured(
        run, binary, broker, tmp_path):  # noqa: F811
    job = start_then_deploy_faulty(
        run, binary, broker, tmp_path, "loop", "--plugin-timeout", "300ms",
        "--plugin-attempts", "2", "--on-plugin-failure", "stop")
    assert job.proc.wait(120) != 0
    log = job.log.read_text()
    assert "failed the same batch 2 times" in log and "faulty@0.1.0+" in log, log
    assert "300ms time budget" in log and "stopped at its last checkpoint" in log, log
    # Nothing the failing batch held is lost: a restart with working rules
    # resumes at the last checkpoint.
    assert_nothing_lost(binary, broker, tmp_path)


def replace_file(path, data: bytes):
    """As a deploy script would: write beside, then rename over."""
    scratch = path.with_suffix(".new")
    scratch.write_bytes(data)
    os.replace(scratch, path)


def test_replacing_the_watched_plugin_file_swaps_the_rules(run, binary, broker, tmp_path):  # noqa: F811
    watched, state = tmp_path / "rules.wasm", tmp_path / "state"
    replace_file(watched, (DIST / "default_rules.wasm").read_bytes())
    first = tmp_path / "first.jsonl"
    first.write_text("".join(event("u%d" % u, 0, u, "home") for u in range(20)))
    produce(run, broker, "clicks", first)
    job = Job(binary, broker, "clicks", tmp_path / "wh", state, "--plugin", watched,
              "--plugin-watch", "--checkpoint-interval", "200ms", "--allowed-lateness", "1")
    job.wait_consumed(20)

    def wait_status(predicate):
        deadline = time.time() + 30
        while not predicate(status := plugin(run, state, "status").stdout.decode()):
            assert time.time() < deadline, status
            time.sleep(0.2)
        return status

    # A broken file is refused; the running rules stay.
    replace_file(watched, b"\0asm\x01\0\0\0 truncated")
    status = wait_status(lambda s: "refused" in s)
    assert '"active": "default-rules@' in status
    # The logout rules, by file.
    replace_file(watched, (DIST / "logout_rules.wasm").read_bytes())
    wait_status(lambda s: '"active": "logout-rules@' in s)

    second = tmp_path / "second.jsonl"
    second.write_text(event("dave", 1, 30, "home") + event("dave", 2, 31, "logout")
                      + event("dave", 3, 32, "home")
                      + "".join(event("c%d" % u, 1, 60, "home") for u in range(40)))
    produce(run, broker, "clicks", second)
    job.wait_consumed(63)
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    Job(binary, broker, "clicks", tmp_path / "wh", state, "--test-mode", "--plugin", watched).wait()
    rows = read_table(tmp_path / "wh")
    assert sum(r["event_count"] for r in rows) == 63
    dave = sorted((r["session_start_time_ms"], r["event_count"], r["end_reason"], r["rule_version"].split("@")[0])
                  for r in rows if r["uuid"] == "dave")
    assert [d[1:] for d in dave] == [(2, "logout", "logout-rules"),
                                     (1, "end_of_input", "logout-rules")]
    # Sessions open at the swap carried over and were closed by the new rules.
    carried = [r for r in rows if r["uuid"].startswith("u")]
    assert sorted((r["event_count"], r["end_reason"], r["rule_version"].split("@")[0])
                  for r in carried) == [(1, "inactivity", "logout-rules")] * 20


def test_a_restart_continues_with_the_rules_deployed_live(run, binary, broker, tmp_path):  # noqa: F811
    state = tmp_path / "state"
    first = tmp_path / "first.jsonl"
    first.write_text("".join(event("u%d" % u, 0, u, "home") for u in range(20)))
    produce(run, broker, "clicks", first)
    args = (binary, broker, "clicks", tmp_path / "wh", state, "--checkpoint-interval", "200ms",
            "--allowed-lateness", "1")
    job = Job(*args)
    job.wait_consumed(20)
    plugin(run, state, "deploy", DIST / "logout_rules.wasm")
    # The swap is durable once a checkpoint has been cut by the new rules: the
    # second to complete after it (the first was cut at the swap's boundary).
    deadline = time.time() + 30
    while job.log.read_text().split("rules swapped")[-1].count(" checkpoint=") < 2:
        assert time.time() < deadline
        time.sleep(0.1)
    job.proc.kill()
    job.proc.wait()

    (state / "admin.addr").unlink()
    job = Job(*args)  # the same command line
    deadline = time.time() + 30
    while (answer := plugin(run, state, "status", check=False)).returncode != 0:
        assert time.time() < deadline and job.proc.poll() is None, answer.stderr.decode()
        time.sleep(0.2)
    status = answer.stdout.decode()
    assert '"active": "logout-rules@' in status and '"resumed"' in status, status
    second = tmp_path / "second.jsonl"
    second.write_text(event("dave", 1, 30, "home") + event("dave", 2, 31, "logout")
                      + "".join(event("c%d" % u, 1, 60, "home") for u in range(40)))
    produce(run, broker, "clicks", second)
    job.wait_consumed(62)
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    rows = read_table(tmp_path / "wh")
    dave = [(r["event_count"], r["end_reason"], r["rule_version"].split("@")[0])
            for r in rows if r["uuid"] == "dave"]
    assert dave == [(2, "logout", "logout-rules")]
