"""The live demo of docs/operating.md, run as written: its commands are read
from the page (between the walkthrough markers), not copied here, so the page
cannot drift from what is tested. Only addresses change: the broker listens on
a free port instead of 9092 and the status page on a free port instead of
9464, since either may be taken on this machine, and the binary is the one
built for the tests.

It must show closed sessions within two minutes of the first event, and they
must be the sessions the model of the semantics finds in what the topic holds."""

import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.request

from conftest import ROOT, read_table
from kafka import NISSHI, free_port, topic_size
from reference import MIN, read_topic, row_key, sessionize_records

PAGE = ROOT / "docs" / "operating.md"
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def walkthrough_commands() -> list:
    """The shell commands of the walkthrough block, continuation lines joined,
    comments dropped."""
    text = PAGE.read_text()
    block = text.split("<!-- walkthrough -->", 1)[1].split("<!-- /walkthrough -->", 1)[0]
    lines = [line for line in block.splitlines() if not line.startswith("```")]
    joined = "\n".join(lines).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def as_run_here(command: str, binary, broker_port: int) -> list:
    command = command.replace("127.0.0.1:9092", f"127.0.0.1:{broker_port}")
    command = command.replace("~/.cache/sessionize/nisshi/bin/nisshi", str(NISSHI))
    args = shlex.split(command.removesuffix("&").strip())
    if args[0] == "sessionize":
        args[0] = str(binary)
    return args


def users_waiting(metrics_port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0
    found = re.search(r"^sessionize_users_waiting (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0


def test_the_live_walkthrough_shows_closed_sessions_within_two_minutes(binary, tmp_path):
    commands = walkthrough_commands()
    assert [c.split()[:2] for c in commands] == [
        ["~/.cache/sessionize/nisshi/bin/nisshi", "broker"], ["sessionize", "run"],
        ["sessionize", "produce"], ["sessionize", "query"]], commands
    broker_port, metrics_port = free_port(), free_port()
    broker, job, producer, query = (as_run_here(c, binary, broker_port) for c in commands)
    job += ["--metrics-addr", f"127.0.0.1:{metrics_port}"]
    log = open(tmp_path / "walkthrough.log", "ab")
    started = []
    try:
        started.append(subprocess.Popen(broker, cwd=tmp_path, stdout=log, stderr=log))
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", broker_port), timeout=0.5).close()
                break
            except OSError:
                assert time.time() < deadline, "the broker did not start"
                time.sleep(0.1)
        started.append(subprocess.Popen(job, cwd=tmp_path, stdout=log, stderr=log))
        started.append(subprocess.Popen(producer, cwd=tmp_path, stdout=log, stderr=log))
        first_event = time.time()

        shown, waiting = set(), 0.0
        while not shown and time.time() - first_event < 120:
            time.sleep(5)
            assert started[1].poll() is None, (tmp_path / "walkthrough.log").read_text()[-3000:]
            waiting = max(waiting, users_waiting(metrics_port))
            out = subprocess.run(query, cwd=tmp_path, capture_output=True)
            if out.returncode == 0:
                shown = set(UUID.findall(out.stdout.decode()))
        assert shown, f"no closed session after 2 minutes:\n{out.stderr.decode()[-2000:]}"
        # Before sessions close, the page counted the users in progress.
        assert waiting > 0

        # What the job wrote is what the model finds in the topic so far: a
        # closed session is final, whatever comes after it.
        started[2].send_signal(signal.SIGTERM)
        started[2].wait(30)
        rows = read_table(tmp_path / "warehouse")
        assert shown <= {r["uuid"] for r in rows}
        servers = f"127.0.0.1:{broker_port}"
        # The demo's broker keeps the topic in memory, where nisshi may report
        # its end a batch short: read on until the topic is quiet.
        records = read_topic(servers, "clickstream-events",
                             topic_size(servers, "clickstream-events"), quiet_s=3)
        model = {s["session_id"]: s for s in sessionize_records(
            records, inactivity_ms=1 * MIN, lateness_ms=10_000).sessions}
        for row in rows:
            want = model.get(row["session_id"])
            assert want is not None, f"session not in the model: {row}"
            assert row_key(row) == row_key(want) and row["end_reason"] == want["timeout_reason"]
    finally:
        for proc in reversed(started):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
