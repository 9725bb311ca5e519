"""`sessionize plugin test`: rules over a small file with known sessions, no job,
Kafka or table; and what changes against other rules."""

import json

from conftest import ROOT

DIST = ROOT / "guest" / "dist"
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def event(user, minute, page):
    return json.dumps({"uuid": user, "event_id": f"{user}-{minute}",
                       "event_timestamp": T0 + minute * 60_000, "page_name": page})


def known_file(tmp_path):
    """ann: one visit with a logout in the middle (the logout rules split it);
    bob: two visits 40 minutes apart (both rules split them); cat: a logout as
    the last event (same events, another end reason); and a malformed line."""
    visits = [("ann", 0, "home"), ("ann", 5, "cart"), ("ann", 10, "logout"), ("ann", 12, "home"),
              ("ann", 15, "search"), ("bob", 0, "home"), ("bob", 40, "home"), ("cat", 0, "home"),
              ("cat", 1, "logout")]
    # In time order: a file is one partition, and lateness is judged on it.
    lines = [event(*v) for v in sorted(visits, key=lambda v: v[1])]
    lines.append('{"uuid": "dan", "event_timestamp": "soon"}')
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_sessions_of_a_candidate_are_printed_as_json_lines(run, tmp_path):
    out = run("plugin", "test", DIST / "logout_rules.wasm", "--input", known_file(tmp_path))
    sessions = [json.loads(line) for line in out.stdout.decode().splitlines()]
    spans = sorted((s["uuid"], (s["start_ms"] - T0) // 60_000, s["event_count"], s["end_reason"])
                   for s in sessions)
    assert spans == [
        ("ann", 0, 3, "logout"), ("ann", 12, 2, "end_of_input"),
        ("bob", 0, 1, "inactivity"), ("bob", 40, 1, "end_of_input"),
        ("cat", 0, 2, "logout"),
    ]
    assert all(s["rule_version"].startswith("logout-rules@") for s in sessions)
    assert "5 sessions from 10 events read" in out.stderr.decode()


def test_against_the_built_in_rules_it_tells_splits_and_changed_reasons(run, tmp_path):
    out = run("plugin", "test", DIST / "logout_rules.wasm", "--input", known_file(tmp_path),
              "--against", "builtin").stdout.decode()
    assert "candidate: logout-rules@" in out and "against:   default-rules@" in out
    assert "events:    10 read, 9 accepted, 0 late, 0 duplicate, 1 rejected" in out
    assert "sessions:  4 -> 5" in out
    assert "unchanged: 2" in out  # bob's two visits
    assert "split:     1 (one session cut into several)" in out
    assert "  ann 2025-01-01T00:00:00Z +15m, 5 events, end_of_input -> [ann " in out
    assert "merged:    0" in out
    assert "end reason changed: 1" in out
    assert "  cat 2025-01-01T00:00:00Z +1m, 2 events, end_of_input -> logout" in out
    reasons = {line.split()[0]: line.split()[1:] for line in out.splitlines()
               if line.startswith("  ") and "->" in line and "events" not in line}
    assert reasons["logout"] == ["0", "->", "2"], reasons

    # The other way round, the same change is a merge.
    back = run("plugin", "test", "builtin", "--input", known_file(tmp_path),
               "--against", DIST / "logout_rules.wasm").stdout.decode()
    assert "merged:    1 (several sessions made one)" in back and "split:     0" in back


def test_a_plugin_that_is_not_one_is_refused_with_its_path(run, tmp_path):
    bogus = tmp_path / "bogus.wasm"
    bogus.write_bytes(b"\0asm\x01\0\0\0")
    out = run("plugin", "test", bogus, "--input", known_file(tmp_path), check=False)
    assert out.returncode != 0
    assert f"loading plugin {bogus}" in out.stderr.decode()
