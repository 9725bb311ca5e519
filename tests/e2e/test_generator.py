"""`sessionize generate` keeps the rate it is given over every minute, from the
first one, whatever the number of users and the duration, and its traffic keeps
the shape the other tests rely on: bursts, gaps past the timeout, marathons,
pauses within the timeout, late events, duplicates, malformed records. Checked
on the generated lines themselves and through the Python model of the
semantics (reference.py), not through the engine."""

import json
from collections import Counter

import pytest

from reference import MIN, sessionize

# GeneratorConfig::sample's start: 2025-01-01T00:00:00Z.
START_MS = 1_735_689_600_000


def generated(run, *args) -> list:
    return run("generate", *args).stdout.decode().splitlines()


def events_per_minute(lines) -> Counter:
    """Distinct valid events (a duplicate copy counted once) by minute of event time."""
    seen, minutes = set(), Counter()
    for line in lines:
        try:
            event = json.loads(line)
            key = (event["uuid"], event["event_id"])
            ts = int(event["event_timestamp"])
        except (ValueError, KeyError, TypeError):
            continue
        if key not in seen and event["uuid"]:
            seen.add(key)
            minutes[(ts - START_MS) // MIN] += 1
    return minutes


@pytest.mark.parametrize("users,rate,duration,minutes", [
    # README's example of the issue: far fewer users than the rate needs at
    # browsing speed, so every visit is scaled up.
    ("500", 400, "5m", 5),
    ("200", 100, "2h", 120),
    # More users than the rate needs: most of them rest longer.
    ("20000", 50, "2h", 120),
])
def test_every_minute_has_the_rate_within_ten_percent(run, users, rate, duration, minutes):
    lines = generated(run, "--num-users", users, "--rate", str(rate), "--duration", duration)
    counts = events_per_minute(lines)
    assert sorted(counts) == list(range(minutes)), "events outside the generated span"
    want = rate * 60
    off = {m: c for m, c in counts.items() if abs(c - want) > 0.1 * want}
    assert not off, f"minutes off the rate of {want} events: {off}"


def test_the_traffic_keeps_its_shape(run):
    lines = generated(run, "--num-users", "2000", "--rate", "20", "--duration", "5h")
    result = sessionize(lines)
    sessions = result.sessions
    assert result.rejected > 0, "no malformed records"
    assert result.late > 0, "no event beyond the lateness"
    assert result.duplicates > 0, "no duplicates"
    reasons = Counter(s["end_reason"] for s in sessions)
    assert reasons["inactivity"] > 1000 and reasons["max_duration"] > 5, reasons
    # Users come back after a gap past the timeout: several sessions each.
    per_user = Counter(s["uuid"] for s in sessions)
    assert sum(1 for n in per_user.values() if n >= 2) > 500
    # Bursts: most gaps within a session are seconds, and some are pauses of
    # minutes that stay within the 30 min timeout.
    gaps = []
    by_user = {}
    for line in lines:
        try:
            event = json.loads(line)
            by_user.setdefault(event["uuid"], set()).add(int(event["event_timestamp"]))
        except (ValueError, KeyError, TypeError):
            continue
    for times in by_user.values():
        times = sorted(times)
        gaps += [b - a for a, b in zip(times, times[1:])]
    within = [g for g in gaps if g <= 30 * MIN]
    assert sum(1 for g in within if g <= 20_000) > 0.8 * len(within)
    assert sum(1 for g in within if 3 * MIN <= g <= 25 * MIN) > 50
    assert sum(1 for g in gaps if g > 31 * MIN) > 1000


@pytest.mark.parametrize("rate", ["0", "-5", "NaN", "inf", "1e9"])
def test_a_rate_out_of_range_is_refused_with_a_sentence(run, rate):
    proc = run("generate", f"--rate={rate}", "--duration", "1m", check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode != 0 and "panicked" not in stderr, stderr
    assert "--rate must be" in stderr, stderr
    assert proc.stdout == b""
