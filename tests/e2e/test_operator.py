"""What a careless or hostile operator can do to a job through its flags, its admin
endpoint and its state directory, and what the job answers: each refusal is a
sentence that says what to do, and nothing stalls or exhausts the job."""

import json
import os
import pty
import signal
import socket
import sqlite3
import stat
import subprocess
import time

import pytest

from kafka import Job
from test_hot_swap import DIST, assert_nothing_lost, plugin, start_then_deploy_faulty
from test_streaming import broker, produce  # noqa: F401  (fixture)


def clicks_topic(run, broker, tmp_path):  # noqa: F811
    """Creates the topic the job reads, with one event in it."""
    one = tmp_path / "one.jsonl"
    one.write_text('{"uuid":"ann","event_id":"e1","event_timestamp":1700000000000,'
                   '"page_name":"home"}\n')
    produce(run, broker, "clicks", one)


@pytest.mark.parametrize("args, message", [
    (["run", "--test-mode", "--plugin-memory-mib", "0"], "0 is not in 1..=4096"),
    (["run", "--test-mode", "--plugin-memory-mib", "18446744073709551615"], "not in 1..=4096"),
    (["run", "--test-mode", "--max-component-mib", "0"], "0 is not in 1..=4096"),
    (["run", "--test-mode", "--max-events-per-batch", "0"], "0 is not in 1..=1000000"),
    (["run", "--test-mode", "--plugin-timeout", "1e30"], "too large"),
    (["run", "--test-mode", "--admin-timeout", "0"], "greater than zero"),
    (["generate", "--num-users", "0"], "0 is not in 1.."),
    (["produce", "--partitions", "0"], "0 is not in 1..=10000"),
])
def test_flags_out_of_range_are_refused_by_the_parser(run, tmp_path, args, message):
    proc = run(*args, check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode == 2, stderr  # the parser's refusal, not a panic or a later failure
    assert message in stderr, stderr
    assert "panicked" not in stderr, stderr


def test_a_missing_input_file_is_reported_once(run, tmp_path):
    proc = run("run", "--input", tmp_path / "missing.jsonl", "--warehouse", tmp_path / "wh",
               check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode != 0
    assert f"cannot read {tmp_path / 'missing.jsonl'}" in stderr, stderr
    assert stderr.count("No such file or directory") == 1, stderr


def test_a_locked_catalog_is_reported_once(run, tmp_path):
    run("run", "--test-mode", "--warehouse", tmp_path / "wh")
    lock = sqlite3.connect(tmp_path / "wh" / "catalog.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        proc = run("run", "--test-mode", "--warehouse", tmp_path / "wh", check=False)
    finally:
        lock.close()
    stderr = proc.stderr.decode()
    assert proc.returncode != 0
    error = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and error[0].count("database is locked") == 1, stderr


def test_an_admin_endpoint_off_loopback_is_refused_unless_the_operator_says_so(
        run, binary, broker, tmp_path):  # noqa: F811
    start = time.time()
    proc = run("run", "--kafka-servers", broker.servers, "--admin-addr", "0.0.0.0:0",
               "--state-dir", tmp_path / "state", "--warehouse", tmp_path / "wh", check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode != 0
    assert "0.0.0.0:0 is not a loopback address" in stderr, stderr
    assert "--admin-allow-remote" in stderr, stderr
    assert time.time() - start < 30, "refused before anything else starts"

    clicks_topic(run, broker, tmp_path)
    job = Job(binary, broker, "clicks", tmp_path / "wh", tmp_path / "state",
              "--admin-addr", "0.0.0.0:0", "--admin-allow-remote")
    deadline = time.time() + 60
    while not (tmp_path / "state" / "admin.addr").exists():
        assert time.time() < deadline and job.proc.poll() is None, job.log.read_text()
        time.sleep(0.2)
    assert "admin endpoint listens beyond loopback" in job.log.read_text()
    assert "default-rules@" in plugin(run, tmp_path / "state", "status").stdout.decode()
    job.proc.send_signal(signal.SIGTERM)
    job.wait()


def http(addr, head: str, body: bytes = b"", timeout=10):
    """One raw HTTP/1.1 request; returns (status, body), without sending more than `body`."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
        header, _, rest = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in header.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return int(header.split()[1]), rest.decode(errors="replace")


def test_deploys_upload_bytes_within_a_limit(run, binary, broker, tmp_path):  # noqa: F811
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    clicks_topic(run, broker, tmp_path)
    job = Job(binary, broker, "clicks", tmp_path / "wh", state, "--max-component-mib", "1",
              "--checkpoint-interval", "200ms")
    deadline = time.time() + 60
    while not (state / "admin.addr").exists():
        assert time.time() < deadline and job.proc.poll() is None, job.log.read_text()
        time.sleep(0.2)
    # An existing state directory others can read is not silently accepted.
    assert "state directory" in job.log.read_text() and "chmod 700" in job.log.read_text()
    host, port = (state / "admin.addr").read_text().strip().rsplit(":", 1)
    addr = (host, int(port))
    token = (state / "admin.token").read_text().strip()

    # A wrong token is refused before the body is read, however large it claims to be.
    status, body = http(addr, "POST /plugin/deploy HTTP/1.1\r\nHost: job\r\n"
                              "Authorization: Bearer wrong\r\nContent-Type: application/wasm\r\n"
                              "Content-Length: 10737418240\r\n", b"\0asm", timeout=5)
    assert status == 401, body
    # A declared size over the limit is refused before it is read, with the flag to raise.
    status, body = http(addr, "POST /plugin/deploy HTTP/1.1\r\nHost: job\r\n"
                              f"Authorization: Bearer {token}\r\nContent-Type: application/wasm\r\n"
                              "Content-Length: 10737418240\r\n", b"\0asm", timeout=5)
    assert status == 413 and "--max-component-mib" in body, body
    # The job reads no path it is sent: the body is the component.
    status, body = http(addr, "POST /plugin/deploy HTTP/1.1\r\nHost: job\r\n"
                              f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                              "Content-Length: 20\r\n", b'{"path":"/dev/zero"}')
    assert status == 422 and "not a Sessionize rules component" in body, body
    logout = (DIST / "logout_rules.wasm").read_bytes()
    status, body = http(addr, "POST /plugin/deploy HTTP/1.1\r\nHost: job\r\n"
                              f"Authorization: Bearer {token}\r\nContent-Type: application/wasm\r\n"
                              f"Content-Length: {len(logout)}\r\n", logout, timeout=60)
    assert status == 200 and "logout-rules@" in body, body

    # Through the command: an upload over the limit, and a file that is not a file.
    big = tmp_path / "big.wasm"
    big.write_bytes(b"\0asm\x01\0\0\0" + bytes(2 << 20))
    refused = plugin(run, state, "deploy", big, check=False)
    assert refused.returncode != 0
    assert "over the limit of 1 MiB" in refused.stderr.decode(), refused.stderr.decode()
    fifo = tmp_path / "rules.pipe"
    os.mkfifo(fifo)
    proc = subprocess.run([str(binary), "plugin", "deploy", str(fifo), "--state-dir", str(state)],
                          capture_output=True, timeout=30)
    assert proc.returncode != 0 and "not a regular file" in proc.stderr.decode()
    assert '"active": "logout-rules@' in plugin(run, state, "status").stdout.decode()
    job.proc.send_signal(signal.SIGTERM)
    job.wait()


def test_a_fixed_plugin_rescues_a_job_whose_rules_keep_failing(
        run, binary, broker, tmp_path):  # noqa: F811
    state = tmp_path / "state"
    job = start_then_deploy_faulty(run, binary, broker, tmp_path, "trap",
                                   "--plugin-attempts", "1000000", "--on-plugin-failure", "stop")
    deadline = time.time() + 60
    while "rules failed a batch" not in job.log.read_text():
        assert time.time() < deadline and job.proc.poll() is None, job.log.read_text()[-3000:]
        time.sleep(0.2)
    # The job keeps retrying bob's batch; the fix is deployed while it does.
    proc = subprocess.run([str(binary), "plugin", "deploy", str(DIST / "default_rules.wasm"),
                           "--state-dir", str(state)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert '"active": "default-rules@' in proc.stdout.decode()
    job.wait_consumed(63)
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    assert_nothing_lost(binary, broker, tmp_path)


def test_a_fresh_state_directory_is_owner_only(run, binary, broker, tmp_path):  # noqa: F811
    clicks_topic(run, broker, tmp_path)
    (tmp_path / "deep").mkdir()
    state = tmp_path / "deep" / "state"
    job = Job(binary, broker, "clicks", tmp_path / "wh", state)
    deadline = time.time() + 60
    while not (state / "admin.addr").exists():
        assert time.time() < deadline and job.proc.poll() is None, job.log.read_text()
        time.sleep(0.2)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / "rules").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / "admin.token").st_mode) == 0o600
    assert "chmod 700" not in job.log.read_text()
    job.proc.send_signal(signal.SIGTERM)
    job.wait()


def test_logs_can_be_json_lines_for_log_shippers(run, tmp_path):
    proc = run("--log-format", "json", "run", "--test-mode", "--warehouse", tmp_path / "wh",
               "--state-dir", tmp_path / "state")
    lines = [line for line in proc.stderr.decode().splitlines() if line.strip()]
    assert lines, "no log lines"
    records = [json.loads(line) for line in lines]
    assert all({"timestamp", "level", "fields", "target"} <= set(r) for r in records)
    assert any(r["fields"].get("message") == "rules loaded" for r in records)
    # The flag is global: after the subcommand too.
    run("run", "--test-mode", "--log-format", "json", "--warehouse", tmp_path / "wh2",
        "--state-dir", tmp_path / "state2")


def test_a_bounded_run_shows_progress_on_a_terminal_only(run, binary, tmp_path):
    events = tmp_path / "events.jsonl"
    run("generate", "--output", events, "--num-users", "2000", "--events", "300000")
    # stderr not a terminal: the summary only.
    piped = run("run", "--input", events, "--warehouse", tmp_path / "piped")
    assert b"events/s" not in piped.stderr and b"events/s" in piped.stdout

    primary, secondary = pty.openpty()
    proc = subprocess.Popen([str(binary), "run", "--input", str(events), "--warehouse",
                             str(tmp_path / "tty")], stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    text = shown.decode(errors="replace")
    assert "events/s" in text and "ETA" in text and "MiB" in text, text[-2000:]
    assert b"sessions written:" in out


def test_the_admin_token_comes_from_the_environment_or_a_file_never_argv(
        run, binary, broker, tmp_path):  # noqa: F811
    """Anything in argv is readable by every user of the machine (/proc/*/cmdline)."""
    for args in (["run", "--test-mode", "--admin-token", "s3cret-s3cret-s3cret"],
                 ["plugin", "status", "--state-dir", tmp_path, "--admin-token", "x" * 32]):
        proc = run(*args, check=False)
        stderr = proc.stderr.decode()
        assert proc.returncode == 2, stderr
        assert "SESSIONIZE_ADMIN_TOKEN" in stderr and "--admin-token-file" in stderr, stderr
    short = dict(os.environ, SESSIONIZE_ADMIN_TOKEN="short")
    proc = run("run", "--test-mode", "--warehouse", tmp_path / "wh", env=short, check=False)
    assert proc.returncode != 0 and "at least 16" in proc.stderr.decode(), proc.stderr.decode()

    clicks_topic(run, broker, tmp_path)
    token = tmp_path / "token"
    token.write_text("an-operators-token-of-some-length\n")
    os.chmod(token, 0o600)
    state = tmp_path / "state"
    job = Job(binary, broker, "clicks", tmp_path / "wh", state, "--admin-token-file", token)
    deadline = time.time() + 60
    while not (state / "admin.addr").exists():
        assert time.time() < deadline and job.proc.poll() is None, job.log.read_text()
        time.sleep(0.2)
    assert (state / "admin.token").read_text().strip() == token.read_text().strip()
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "admin.addr").write_text((state / "admin.addr").read_text())
    status = run("plugin", "status", "--state-dir", other, "--admin-token-file", token)
    assert "default-rules@" in status.stdout.decode()
    job.proc.send_signal(signal.SIGTERM)
    job.wait()


def test_the_status_page_beyond_loopback_shows_no_raw_records_unless_asked(
        run, binary, broker, tmp_path):  # noqa: F811
    """Rejected records are raw input, often personal data: a page served
    beyond loopback (for Prometheus to scrape) leaves their text out."""
    events = tmp_path / "events.jsonl"
    events.write_text('{"uuid":"ann","event_id":"e1","event_timestamp":1700000000000}\n'
                      '{"uuid":"ann","event_id":"e2","event_timestamp":"secret-card-4242"}\n')
    produce(run, broker, "clicks", events)
    for flags, shown in ((), False), (("--status-raw-records",), True):
        state = tmp_path / f"state{len(flags)}"
        job = Job(binary, broker, "clicks", tmp_path / f"wh{len(flags)}", state,
                  "--metrics-addr", "0.0.0.0:0", *flags)
        deadline = time.time() + 60
        while not (state / "metrics.addr").exists():
            assert time.time() < deadline and job.proc.poll() is None, job.log.read_text()
            time.sleep(0.2)
        port = (state / "metrics.addr").read_text().strip().rsplit(":", 1)[1]
        page = ""
        while 'id="dead-letter-table"' not in page:
            assert time.time() < deadline, page
            _, page = http(("127.0.0.1", int(port)), "GET / HTTP/1.1\r\nHost: x\r\n"
                           "Connection: close\r\n")
            time.sleep(0.3)
        assert ("secret-card-4242" in page) == shown, page
        warned = "raw text of rejected records" in job.log.read_text()
        assert warned != shown, job.log.read_text()
        job.proc.send_signal(signal.SIGTERM)
        job.wait()
