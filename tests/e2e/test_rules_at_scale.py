"""Every shipped rules component, in each of the three languages, over an
ordinary day of traffic (a million generated events, 20,000 users) at the
default limits (64 MiB of plugin memory, a 5 s call budget): each writes the
sessions of the independent model (reference.py) to the table, read back
with pyiceberg. The JavaScript rules stopped at their memory limit on input
this size before the host learnt to replace an instance that keeps growing."""

from conftest import ROOT, SESSION_COLUMNS, read_table
from reference import sessionize

DIST = ROOT / "guest" / "dist"
EVENTS = 1_000_000
# (component, what its rows' rule_version starts with); conversion rules cut
# the same sessions and add attributes.
COMPONENTS = [
    ("default_rules", "default-rules@"),
    ("conversion_rules", "conversion-rules@"),
    ("python_rules", "python-rules@"),
    ("python_conversion", "python-conversion-rules@"),
    ("js_rules", "js-rules@"),
    ("js_conversion", "js-conversion-rules@"),
]


def key(row):
    return tuple(tuple(row[c]) if isinstance(row[c], list) else row[c] for c in SESSION_COLUMNS)


def test_every_shipped_component_writes_the_models_sessions_for_a_day_of_traffic(
        run, tmp_path):
    """One after another, not side by side: each run keeps a core busy for up
    to a minute, and the suite's timing-sensitive tests (kills, rebalances)
    share the machine with it."""
    events = tmp_path / "events.jsonl"
    run("generate", "--num-users", "20000", "--rate", "12", "--duration", "1d",
        "--events", EVENTS, "--seed", "29", "--output", events)
    lines = events.read_text().splitlines()
    assert len(lines) >= EVENTS
    expected = sorted(map(key, sessionize(lines).sessions))
    assert len(expected) > 50_000
    wrong = []
    for component, version in COMPONENTS:
        warehouse = tmp_path / f"wh-{component}"
        run("run", "--input", events, "--warehouse", warehouse,
            "--plugin", DIST / f"{component}.wasm")
        rows = read_table(warehouse)
        got = sorted(map(key, rows))
        if got != expected:
            missing, extra = set(expected) - set(got), set(got) - set(expected)
            wrong.append((component, len(got), f"{len(missing)} missing, {len(extra)} extra",
                          sorted(missing)[:2], sorted(extra)[:2]))
        versions = {r["rule_version"].split("+")[0] for r in rows}
        if not all(v.startswith(version) for v in versions):
            wrong.append((component, versions))
    assert not wrong, wrong
