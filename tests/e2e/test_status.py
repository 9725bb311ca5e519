"""What a running job tells its operators: /metrics (parsed by the Prometheus
project's own parser) checked against what the job wrote to the tables,
/healthz and /readyz, and the status page rendered by a real browser (headless
Chromium) checked against /metrics."""

import html.parser
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import ROOT, catalog, read_table
from kafka import Job, free_port
from test_streaming import broker, generate, produce  # noqa: F401  (fixture)

DIST = ROOT / "guest" / "dist"
ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def get(url, timeout=5):
    """(status, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(addr):
    """The job's metrics: {(name, labels as a sorted tuple): value}, from the
    OpenMetrics parser (which refuses a malformed exposition)."""
    status, body = get(f"http://{addr}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def total(samples, name, **having):
    """The sum of `name` over label sets that include `having`."""
    return sum(v for (n, labels), v in samples.items()
               if n == name and all((k, v2) in labels for k, v2 in having.items()))


def labels_of(samples, name, label):
    return {dict(labels)[label]: v for (n, labels), v in samples.items() if n == name}


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def hostile_events(run, tmp_path, n=20000):
    """Generated events (with duplicates and late ones) and a few records that
    are not events, each kind of rejection at least once."""
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "400", "--rate", "1.7", "--duration", "6h",
             "--seed", "5", "--events", str(n))
    bad = ['{"uuid": "x", "event_timestamp": "yesterday"}', "not json at all",
           '{"event_timestamp": 1735689600000}', '{"uuid": 7, "event_timestamp": 1}']
    lines = events.read_text().splitlines()
    for i, line in enumerate(bad):
        lines.insert(1000 * (i + 1), line)
    events.write_text("\n".join(lines) + "\n")
    return events, len(lines)


def start_job(binary, broker, tmp_path, *extra):  # noqa: F811
    state = tmp_path / "state"
    # Partitions never go idle here: the watermark (and what is closed) stays
    # put once the input is read, so the table can be compared with the metrics.
    interval = [] if "--checkpoint-interval" in extra else ["--checkpoint-interval", "300ms"]
    job = Job(binary, broker, "clicks", tmp_path / "wh", state, "--idle-timeout", "1h",
              *interval, *extra)
    addr_file = state / "metrics.addr"

    def address():
        assert job.proc.poll() is None, job.log.read_text()[-2000:]
        return addr_file.exists() and addr_file.read_text().strip()
    wait_for(address, 60, "the metrics address")
    return job, addr_file.read_text().strip()


def settled(addr, n):
    """Metrics once a completed checkpoint covers all `n` records and two
    scrapes a second apart agree on what was read and closed."""
    keys = ["sessionize_events_read_total", "sessionize_sessions_closed_total",
            "sessionize_events_total", "sessionize_committed_offset"]

    def counts(samples):
        return {k: v for k, v in samples.items() if k[0] in keys}

    def stable():
        first = scrape(addr)
        if total(first, "sessionize_committed_offset") < n:
            return None
        time.sleep(1.0)
        second = scrape(addr)
        return second if counts(first) == counts(second) else None
    return wait_for(stable, 120, "the job to settle")


def test_metrics_agree_with_what_the_job_wrote(run, binary, broker, tmp_path):  # noqa: F811
    events, n = hostile_events(run, tmp_path)
    produce(run, broker, "clicks", events)
    job, addr = start_job(binary, broker, tmp_path)
    try:
        m = settled(addr, n)
        wh = tmp_path / "wh"
        sessions = read_table(wh)
        dead = read_table(wh, "sessions.rejected_events")
        late = [d for d in dead if d["reason"].startswith("late:")]

        assert value(m, "sessionize_events_read_total") == n
        outcomes = labels_of(m, "sessionize_events_total", "outcome")
        assert sum(outcomes.values()) == n, outcomes
        assert outcomes["rejected"] == len(dead) - len(late) >= 4
        assert outcomes["late"] == len(late) > 0
        assert outcomes["duplicate"] > 0
        reasons = labels_of(m, "sessionize_events_rejected_total", "reason")
        assert {"bad_timestamp", "invalid_json", "missing_field", "wrong_type"} <= set(reasons)
        assert sum(reasons.values()) == outcomes["rejected"]

        # Sessions closed, by end reason, are the rows of the table.
        by_reason = labels_of(m, "sessionize_sessions_closed_total", "end_reason")
        assert by_reason == dict(Counter(r["end_reason"] for r in sessions)), by_reason
        assert len(sessions) > 100
        # Accepted events are in closed sessions or still open.
        assert sum(r["event_count"] for r in sessions) <= outcomes["accepted"]
        assert value(m, "sessionize_open_sessions") > 0
        # Keyed by uuid (as `sessionize produce` does): every user on one partition.
        assert value(m, "sessionize_events_off_partition_total") == 0

        # The committed offsets are those of the table's last commit; nothing is left to read.
        table = catalog(wh).load_table("sessions.user_sessions")
        offsets = json.loads(table.current_snapshot().summary["sessionize.offsets"])
        committed = labels_of(m, "sessionize_committed_offset", "partition")
        assert {int(p): int(o) for p, o in committed.items()} == \
            {int(p): int(o) for p, o in offsets.items()}
        assert sum(committed.values()) == n
        wait_for(lambda: total(scrape(addr), "sessionize_consumer_lag") == 0 and
                 len(labels_of(scrape(addr), "sessionize_consumer_lag", "partition")) == 4,
                 30, "the lag of four partitions to read 0")

        # Timings: one observation per checkpoint; plugin calls all timed.
        checkpoints = value(m, "sessionize_checkpoints_total")
        assert checkpoints > 0
        assert value(m, "sessionize_checkpoint_duration_seconds_count") == checkpoints
        assert value(m, "sessionize_iceberg_commit_duration_seconds_count") == checkpoints
        assert value(m, "sessionize_session_visibility_delay_seconds_count") > 0
        calls = value(m, "sessionize_plugin_calls_total")
        assert calls > 0 and value(m, "sessionize_plugin_call_duration_seconds_count") == calls
        assert value(m, "sessionize_state_store_size_bytes") > 0
        assert value(m, "sessionize_text_table_entries") > 0
        assert value(m, "sessionize_watermark_delay_seconds") > 0
        versions = labels_of(m, "sessionize_rules_info", "rule_version")
        assert list(versions) == [sessions[0]["rule_version"]] and list(versions.values()) == [1]

        assert get(f"http://{addr}/healthz") == (200, "ok\n")
        assert get(f"http://{addr}/readyz") == (200, "ready\n")
    finally:
        job.proc.terminate()
        job.wait()


def test_readyz_waits_for_the_topic_and_for_the_job_to_catch_up(run, binary, broker, tmp_path):  # noqa: F811
    # One message per poll: the job reads slowly enough for its lag to be seen.
    job, addr = start_job(binary, broker, tmp_path, "--max-events-per-batch", "1",
                          "--ready-max-lag", "50")
    try:
        # No topic yet: alive, not ready, and it says why.
        assert get(f"http://{addr}/healthz") == (200, "ok\n")
        status, body = get(f"http://{addr}/readyz")
        assert status == 503 and "no partitions assigned yet" in body, body
        events = tmp_path / "events.jsonl"
        generate(run, events, "--num-users", "2000", "--rate", "1000", "--duration", "2h",
                 "--events", "100000", "--seed", "3")
        produce(run, broker, "clicks", events)
        behind = wait_for(lambda: (lambda r: r[0] == 503 and "behind the end of the input" in r[1]
                                   and r)(get(f"http://{addr}/readyz")), 60, "a lag to be reported")
        assert "ready at 50 or fewer" in behind[1], behind
        lags = labels_of(scrape(addr), "sessionize_consumer_lag", "partition")
        assert sum(lags.values()) > 50, lags
        wait_for(lambda: get(f"http://{addr}/readyz")[0] == 200, 120, "/readyz to turn 200")
        assert total(scrape(addr), "sessionize_consumer_lag") <= 50
    finally:
        job.proc.terminate()
        job.wait()


class PageNumbers(html.parser.HTMLParser):
    """The text of every element with an id, as the browser rendered it."""

    def __init__(self):
        super().__init__()
        self.stack, self.by_id, self.rows = [], {}, Counter()
        # Per element with an id: the tags inside it.
        self.inside = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for element in filter(None, self.stack):
            self.inside.setdefault(element, Counter())[tag] += 1
        self.stack.append(attrs.get("id"))
        if tag == "tr":
            for table in filter(None, self.stack):
                self.rows[table] += 1
        if attrs.get("id"):
            self.by_id.setdefault(attrs["id"], "")

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        for element in filter(None, self.stack):
            self.by_id[element] += data


def chromium(*args):
    assert CHROMIUM, "Chromium is missing: tests/run.sh installs Debian's chromium package"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars", f"--user-data-dir={ARTIFACTS / 'chromium-profile'}", *args],
        capture_output=True, timeout=120, check=True)


def test_the_status_page_in_a_browser_shows_what_metrics_say(run, binary, broker, tmp_path):  # noqa: F811
    events, n = hostile_events(run, tmp_path, 15000)
    produce(run, broker, "clicks", events)
    job, addr = start_job(binary, broker, tmp_path)
    try:
        settled(addr, n)
        # A live swap, so the rules' history shows one with its pause.
        state = tmp_path / "state"
        run("plugin", "deploy", DIST / "logout_rules.wasm", "--state-dir", state)
        time.sleep(2.5)  # a few samples for the charts
        m = settled(addr, n)
        ARTIFACTS.mkdir(exist_ok=True)
        dom = chromium("--dump-dom", f"http://{addr}/").stdout.decode()
        after = scrape(addr)
        page = PageNumbers()
        page.feed(dom)
        shown = page.by_id

        outcomes = labels_of(m, "sessionize_events_total", "outcome")
        expect = {
            "events-read": value(m, "sessionize_events_read_total"),
            "events-accepted": outcomes["accepted"],
            "events-late": outcomes["late"],
            "events-duplicate": outcomes["duplicate"],
            "events-rejected": outcomes["rejected"],
            "sessions-closed": total(m, "sessionize_sessions_closed_total"),
            "open-sessions": value(m, "sessionize_open_sessions"),
            "users-waiting": value(m, "sessionize_users_waiting"),
            "pending-events": value(m, "sessionize_pending_events"),
            "checkpoints": value(m, "sessionize_checkpoints_total"),
        }
        for element, number in expect.items():
            # The page was read between two scrapes: checkpoints may have moved on.
            later = {"checkpoints": value(after, "sessionize_checkpoints_total")}.get(element,
                                                                                    number)
            assert number <= int(shown[element]) <= later, (element, shown[element], number)
        assert shown["events-read"] == str(n)
        assert float(shown["watermark-delay"]) == pytest.approx(
            value(m, "sessionize_watermark_delay_seconds"), abs=5)
        versions = labels_of(after, "sessionize_rules_info", "rule_version")
        assert shown["rule-version"] in versions and shown["rule-version"].startswith("logout")
        assert shown["readiness"].strip() == "ready"
        # Charts were drawn; the history has the start and the swap (with its
        # pause); the dead letters are the latest, with reasons.
        for chart in ["chart-throughput", "chart-lag", "chart-open-sessions",
                      "chart-watermark-delay"]:
            assert page.inside.get(chart, {}).get("polyline", 0) >= 1, (chart, page.inside.get(chart))
        assert page.rows["rules-table"] == 3, page.rows
        assert "deployed" in shown["rules-table"] and "started" in shown["rules-table"]
        assert page.rows["checkpoint-table"] > 1
        assert "late:" in shown["dead-letter-table"] or "event_timestamp" in \
            shown["dead-letter-table"]
        assert page.rows["dead-letter-table"] > 1

        shot = ARTIFACTS / "status-page.png"
        shot.unlink(missing_ok=True)
        chromium(f"--screenshot={shot}", "--window-size=1280,1500", f"http://{addr}/")
        assert shot.stat().st_size > 20_000
    finally:
        job.proc.terminate()
        job.wait()


def test_the_grafana_dashboard_asks_only_for_metrics_the_job_serves(run, binary, broker,  # noqa: F811
                                                                     tmp_path):
    events, n = hostile_events(run, tmp_path)
    produce(run, broker, "clicks", events)
    job, addr = start_job(binary, broker, tmp_path)
    try:
        settled(addr, n)
        # Every family the job declares, with the names its samples take.
        families = re.findall(r"^# TYPE (\S+) (\S+)$", get(f"http://{addr}/metrics")[1], re.M)
        served = {f"{name}{suffix}" for name, kind in families
                  for suffix in {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
                  .get(kind, [""])}
    finally:
        job.proc.terminate()
        job.wait()
    dashboard = json.loads((ROOT / "host" / "monitoring" / "grafana-dashboard.json").read_text())
    asked = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"sessionize_[a-z_]+", target["expr"])}
    assert len(asked) >= 15
    assert asked <= served, asked - served


def test_a_run_over_a_file_serves_metrics_only_when_asked(run, binary, tmp_path):
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "300", "--rate", "1000", "--duration", "6h",
             "--events", "20000", "--seed", "8")
    assert len(events.read_bytes().splitlines()) > 16384
    lines = events.read_bytes().splitlines(keepends=True)
    port = free_port()
    proc = subprocess.Popen([str(binary), "run", "--input", "-", "--warehouse", tmp_path / "wh",
                             "--metrics-addr", f"127.0.0.1:{port}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Two whole blocks of 8192 records reach the engine while stdin stays open.
        proc.stdin.write(b"".join(lines[:16384]))
        proc.stdin.flush()
        m = wait_for(lambda: (lambda s: value(s, "sessionize_events_read_total") == 16384 and s)(
            scrape(f"127.0.0.1:{port}")), 60, "the first two blocks")
        outcomes = labels_of(m, "sessionize_events_total", "outcome")
        assert sum(outcomes.values()) == 16384, outcomes
        assert get(f"http://127.0.0.1:{port}/readyz") == (200, "ready\n")
        out, err = proc.communicate(input=b"".join(lines[16384:]), timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert f"events read:       {len(lines)}" in out.decode()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_input_not_keyed_by_user_is_counted_and_named(run, binary, broker, tmp_path):  # noqa: F811
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.servers})
    for future in admin.create_topics([NewTopic("clicks", 4, 1)]).values():
        future.result(30)
    events = tmp_path / "events.jsonl"
    generate(run, events, "--num-users", "50", "--events", "2000", "--seed", "4")
    producer = Producer({"bootstrap.servers": broker.servers})
    lines = events.read_text().splitlines()
    for i, line in enumerate(lines):
        producer.produce("clicks", line.encode(), partition=i % 4)  # round robin, no key
    assert producer.flush(30) == 0
    job, addr = start_job(binary, broker, tmp_path)
    try:
        m = settled(addr, len(lines))
        assert value(m, "sessionize_events_off_partition_total") > 1000
        assert "events of a user arrive on more than one partition: key the topic by uuid" in \
            job.log.read_text()
    finally:
        job.proc.terminate()
        out = job.wait()
    assert "off partition:" in out
