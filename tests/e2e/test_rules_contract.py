"""Rules contract 0.2 through the real parts: a plugin that reads a declared
event field and writes four session attributes, deployed live into a job over
Kafka; the sessions table gains the columns at the swap and keeps them through
a rollback; a plugin that retypes a column is refused; 0.1 components run."""

import json
import signal
import time

import pytest

from pyiceberg.types import BooleanType, DoubleType, StringType

from conftest import ROOT, catalog, read_table
from test_streaming import broker, produce  # noqa: F401  (fixture)
from kafka import Job

DIST = ROOT / "guest" / "dist"
FIXTURES = ROOT / "tests" / "fixtures"
DAY_MS = 1_735_689_600_000  # 2025-01-01
ATTRIBUTES = {"converted": BooleanType(), "revenue": DoubleType(),
              "entry_page": StringType(), "exit_page": StringType()}


def line(user, i, minute, page=None, event_type=None, value=None):
    event = {"uuid": user, "event_id": f"{user}-{i}", "event_timestamp": DAY_MS + minute * 60_000}
    if page is not None:
        event["page_name"] = page
    details = {}
    if event_type is not None:
        details["event_type"] = event_type
    if value is not None:
        details["event_value"] = value
    if details:
        event["event_details"] = details
    return json.dumps(event) + "\n"


def clock(minute, users=40):
    """Events for many users at `minute`: every partition moves past the others."""
    return "".join(line(f"clock{minute}-{u}", 0, minute, "home") for u in range(users))


def shoppers(prefix, start_minute, count):
    """`count` users with one short visit each: browsing, sometimes a booking
    with a value (some as strings, which a float field does not take), some
    confirmations, some events without a page and some with an empty page
    name (which names no page)."""
    out = []
    for u in range(count):
        user = f"{prefix}{u}"
        m = start_minute + u % 7
        first_page = "home" if u % 3 else ("" if u % 9 == 0 else "search")
        events = [line(user, 0, m, first_page),
                  line(user, 1, m + 1, None, "view", 3.5)]
        if u % 2 == 0:
            events.append(line(user, 2, m + 2, "hotel", "booking", 100 + u))
        if u % 4 == 0:
            events.append(line(user, 3, m + 3, "room", "booking", "12.5"))
        if u % 5 == 0:
            events.append(line(user, 4, m + 4, "confirmation"))
        last_page = "account" if u % 6 else ("" if u % 12 == 0 else None)
        events.append(line(user, 5, m + 5, last_page, "view"))
        out.extend(events)
    # In time order: lateness is judged per partition, and the job allows 1 s.
    return sorted(out, key=lambda raw: json.loads(raw)["event_timestamp"])


def model(lines):
    """The conversion attributes each user's one session must have, computed
    here from the events, independently of the plugin."""
    by_user = {}
    for raw in "".join(lines).splitlines():
        e = json.loads(raw)
        by_user.setdefault(e["uuid"], []).append(e)
    expected = {}
    for user, events in by_user.items():
        events.sort(key=lambda e: e["event_timestamp"])
        # An empty page name names no page.
        pages = [e["page_name"] for e in events if e.get("page_name")]
        types = [e.get("event_details", {}).get("event_type") for e in events]
        revenue = 0.0
        for e in events:
            details = e.get("event_details", {})
            value = details.get("event_value")
            if details.get("event_type") == "booking" and isinstance(value, (int, float)):
                revenue += value
        expected[user] = {
            "converted": "booking" in types or "confirmation" in pages,
            "revenue": revenue,
            "entry_page": pages[0] if pages else None,
            "exit_page": pages[-1] if pages else None,
        }
    return expected


def plugin(run, state, *args, check=True):
    return run("plugin", *args, "--state-dir", state, check=check)


def wait_for_rows(warehouse, predicate, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            rows = read_table(warehouse)
        except Exception:  # the table may not exist yet
            rows = []
        if predicate(rows):
            return rows
        time.sleep(0.3)
    raise AssertionError("rows did not arrive")


def attributes_of(row):
    return {name: row.get(name) for name in ATTRIBUTES}


def test_conversion_rules_deployed_live_add_columns_and_a_rollback_writes_nulls(
        run, binary, broker, tmp_path):  # noqa: F811
    wh, state = tmp_path / "wh", tmp_path / "state"
    before = shoppers("a", 0, 20) + [clock(120)]
    during = shoppers("b", 300, 60) + [clock(500)]
    after = shoppers("r", 700, 20) + [clock(900)]
    paths = []
    for name, part in (("before", before), ("during", during), ("after", after)):
        paths.append(tmp_path / f"{name}.jsonl")
        paths[-1].write_text("".join(part))

    produce(run, broker, "clicks", paths[0])
    # The faulty plugin, deployed later, reads the parameter; the others ignore it.
    job = Job(binary, broker, "clicks", wh, state, "--checkpoint-interval", "300ms",
              "--allowed-lateness", "1s", "--plugin-param", "fault=retyped-revenue")
    wait_for_rows(wh, lambda rows: sum(r["uuid"].startswith("a") for r in rows) == 20)
    assert "converted" not in catalog(wh).load_table("sessions.user_sessions").schema().column_names

    deployed = plugin(run, state, "deploy", DIST / "conversion_rules.wasm").stdout.decode()
    assert "conversion-rules@0.2.0" in deployed
    produce(run, broker, "clicks", paths[1])
    wait_for_rows(wh, lambda rows: sum(r["uuid"].startswith("b") for r in rows) == 60)

    # The table follows the plugin: four optional columns, documented.
    schema = catalog(wh).load_table("sessions.user_sessions").schema()
    for name in ATTRIBUTES:
        field = schema.find_field(name)
        assert not field.required, name
        assert field.doc, name
    assert schema.find_field("revenue").doc == "Sum of event_details.event_value over booking events"

    # A plugin that wants `revenue` as a long is refused; the running one stays.
    refused = plugin(run, state, "deploy", DIST / "faulty.wasm", check=False)
    assert refused.returncode != 0
    message = refused.stderr.decode()
    assert "column revenue of the sessions table is double" in message, message
    assert "conversion-rules@0.2.0" in message, message
    status = plugin(run, state, "status").stdout.decode()
    assert "attribute revenue is a long" in status, status

    assert "default-rules@" in plugin(run, state, "rollback").stdout.decode()
    produce(run, broker, "clicks", paths[2])
    wait_for_rows(wh, lambda rows: sum(r["uuid"].startswith("r") for r in rows) == 20)
    job.proc.send_signal(signal.SIGTERM)
    job.wait()

    rows = read_table(wh)
    table = catalog(wh).load_table("sessions.user_sessions")
    for name, kind in ATTRIBUTES.items():
        assert table.schema().find_field(name).field_type == kind, name
    by_user = {}
    for r in rows:
        by_user.setdefault(r["uuid"], []).append(r)
    expected = model(during)
    for user, sessions in by_user.items():
        assert len(sessions) == 1, (user, sessions)
        row = sessions[0]
        if user.startswith("b"):
            assert row["rule_version"].startswith("conversion-rules@0.2.0+"), row
            assert attributes_of(row) == expected[user], (user, row)
        elif user.startswith(("a", "r")):
            # Cut before the deploy, or after the rollback: nulls.
            assert row["rule_version"].startswith("default-rules@"), row
            assert attributes_of(row) == dict.fromkeys(ATTRIBUTES), row
    assert sum(expected[u]["converted"] for u in expected) > 0
    assert any(0 < expected[u]["revenue"] for u in expected)
    # The schema changed once: one schema before the deploy, one after.
    assert len(table.metadata.schemas) == 2, table.metadata.schemas


def test_components_built_for_contract_0_1_still_run_and_swap(run, binary, broker, tmp_path):  # noqa: F811
    old = FIXTURES / "default_rules-0.1.wasm"
    events = tmp_path / "events.jsonl"
    events.write_text("".join(shoppers("u", 0, 30)) + clock(200))
    # A bounded run with the 0.1 component equals one with the 0.2 build of the same rules.
    run("run", "--input", events, "--warehouse", tmp_path / "old", "--plugin", old)
    run("run", "--input", events, "--warehouse", tmp_path / "new",
        "--plugin", DIST / "default_rules.wasm")
    key = lambda r: (r["uuid"], r["session_start_time_ms"], r["event_count"], r["end_reason"])  # noqa: E731
    assert sorted(map(key, read_table(tmp_path / "old"))) == \
        sorted(map(key, read_table(tmp_path / "new")))

    # Live: start on the 0.1 component, swap to conversion rules (0.2) and back.
    wh, state = tmp_path / "wh", tmp_path / "state"
    produce(run, broker, "clicks", events)
    job = Job(binary, broker, "clicks", wh, state, "--checkpoint-interval", "300ms",
              "--plugin", old)
    job.wait_consumed(events.read_text().count("\n"))
    assert "conversion-rules@" in plugin(run, state, "deploy", DIST / "conversion_rules.wasm").stdout.decode()
    assert "default-rules@" in plugin(run, state, "rollback").stdout.decode()
    job.proc.send_signal(signal.SIGTERM)
    job.wait()
    status_log = job.log.read_text()
    assert "rules swapped" in status_log and "rules rolled back" in status_log


@pytest.mark.parametrize("component", ["python_conversion", "js_conversion"])
def test_the_python_and_js_sdks_cut_the_same_sessions_with_the_same_attributes(
        run, tmp_path, component):
    """guest/python-conversion (Python SDK) and guest/js-conversion (JavaScript
    SDK) against the model, and against guest/conversion-rules (Rust SDK)."""
    events = tmp_path / "events.jsonl"
    lines = shoppers("u", 0, 40) + shoppers("v", 90, 40)
    events.write_text("".join(lines) + clock(300))

    def sessions(plugin):
        out = run("plugin", "test", plugin, "--input", events).stdout.decode().splitlines()
        return sorted((s["uuid"], s["start_ms"], s["event_count"], s["end_reason"],
                       json.dumps(s.get("attributes"), sort_keys=True))
                      for s in map(json.loads, out))

    candidate, rust = sessions(DIST / f"{component}.wasm"), sessions(DIST / "conversion_rules.wasm")
    expected = model(lines)
    shopped = [s for s in candidate if not s[0].startswith("clock")]
    assert len(shopped) == len(expected) == 80
    for uuid, _, _, _, attributes in shopped:
        assert json.loads(attributes) == expected[uuid], (component, uuid, attributes)
    assert candidate == rust
    converted = [s for s in rust if '"converted": true' in s[4]]
    assert 0 < len(converted) < len(rust)
    compared = run("plugin", "test", DIST / f"{component}.wasm", "--input", events,
                   "--against", DIST / "conversion_rules.wasm").stdout.decode()
    assert "unchanged: 120" in compared, compared
    assert "  converted" in compared and "true" in compared, compared


def test_rules_in_javascript_cut_the_same_sessions_as_the_rust_default_rules(run, tmp_path):
    """guest/js-rules (the JavaScript SDK, componentize-js): three languages, one contract."""
    events = tmp_path / "events.jsonl"
    run("generate", "--output", events, "--num-users", "300", "--rate", "1.3", "--duration", "6h",
        "--events", "20000", "--seed", "5")
    for flags in ([], ["--inactivity-timeout", "5m", "--max-session-duration", "20m"]):
        compared = run("plugin", "test", DIST / "js_rules.wasm", "--input", events,
                       "--against", "builtin", *flags).stdout.decode()
        assert "candidate: js-rules@0.2.0+" in compared, compared
        sessions = int(compared.split("sessions:")[1].split("->")[0])
        assert sessions > 500, compared
        assert f"unchanged: {sessions}\n" in compared, compared
        for change in ("split:     0", "merged:    0", "end reason changed: 0", "reshaped:  0"):
            assert change in compared, compared
    assert "max_duration" in compared, compared
