"""Every shipped rules component, in each of the three languages, over an
ordinary day of traffic (a million generated events, 20,000 users) at the
default limits (64 MiB of plugin memory, a 5 s call budget): each writes the
sessions of the independent model (reference.py) to the table, read back
with pyiceberg. The JavaScript rules stopped at their memory limit on input
this size before the host learnt to replace an instance that keeps growing."""

import subprocess

import pytest

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


@pytest.fixture(scope="module")
def day(tmp_path_factory, binary):
    """A million events and the model's sessions for them."""
    path = tmp_path_factory.mktemp("day") / "events.jsonl"
    subprocess.run(
        [str(binary), "generate", "--num-users", "20000", "--rate", "12", "--duration", "1d",
         "--events", str(EVENTS), "--seed", "29", "--output", str(path)],
        check=True, capture_output=True,
    )
    lines = path.read_text().splitlines()
    assert len(lines) >= EVENTS
    return path, sorted(map(key, sessionize(lines).sessions))


@pytest.mark.parametrize("component,version", COMPONENTS, ids=[c for c, _ in COMPONENTS])
def test_a_shipped_component_writes_the_models_sessions_for_a_day_of_traffic(
        run, day, tmp_path, component, version):
    events, expected = day
    warehouse = tmp_path / "wh"
    run("run", "--input", events, "--warehouse", warehouse, "--state-dir", tmp_path / "state",
        "--plugin", DIST / f"{component}.wasm")
    rows = read_table(warehouse)
    assert len(expected) > 50_000
    assert sorted(map(key, rows)) == expected
    assert all(r["rule_version"].startswith(version) for r in rows), rows[0]["rule_version"]
