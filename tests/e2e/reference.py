"""The sessionization semantics written again, independently of the Rust code, in
plain Python: the expectation the end-to-end tests compare the table against."""

import json
import re
import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime, timezone

from pyiceberg.transforms import BucketTransform
from pyiceberg.types import StringType

MIN = 60_000
SESSION_NAMESPACE = uuidlib.UUID("5e5510e1-2e00-4c0b-9d7a-62a10c5e55d1")
_bucket = BucketTransform(100).transform(StringType())
_DIGITS = re.compile(r"[0-9]+")


@dataclass
class Result:
    sessions: list  # of dicts, one per session row
    accepted: int
    late: int
    duplicates: int
    rejected: int


def _valid(raw: str):
    """The event, or None if the record is not a valid event."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    user = obj.get("uuid")
    if not isinstance(user, str) or not user:
        return None
    ts = obj.get("event_timestamp")
    if isinstance(ts, bool):
        return None
    if isinstance(ts, str):
        if not _DIGITS.fullmatch(ts) or int(ts) >= 2**63:
            return None
        ts = int(ts)
    elif isinstance(ts, int):
        if ts < 0 or ts >= 2**63:
            return None
    elif isinstance(ts, float):
        if ts < 0 or not ts.is_integer():
            return None
        ts = int(ts)
    else:
        return None
    event_id = obj.get("event_id")
    if isinstance(event_id, bool) or not (event_id is None or isinstance(event_id, (str, int))):
        return None
    page = obj.get("page_name")
    if page is not None and not isinstance(page, str):
        return None
    details = obj.get("event_details")
    if details is not None and not isinstance(details, dict):
        return None
    return user, None if event_id is None else str(event_id), ts, page


def sessionize(lines, inactivity_ms=30 * MIN, max_duration_ms=120 * MIN, lateness_ms=10 * MIN):
    accepted, seen = [], set()
    late = duplicates = rejected = 0
    max_seen = None
    for raw in lines:
        if not raw.strip():
            continue
        event = _valid(raw)
        if event is None:
            rejected += 1
            continue
        user, event_id, ts, page = event
        if max_seen is not None and ts < max_seen - lateness_ms:
            late += 1
            continue
        max_seen = ts if max_seen is None else max(max_seen, ts)
        if event_id is not None:
            if (user, event_id) in seen:
                duplicates += 1
                continue
            seen.add((user, event_id))
        accepted.append(event)
    watermark = (max_seen or 0) - lateness_ms

    by_user = {}
    for user, event_id, ts, page in accepted:
        by_user.setdefault(user, []).append((ts, event_id or "", page or ""))
    sessions = []

    def expiry(s):
        idle, longest = s["last"] + inactivity_ms, s["start"] + max_duration_ms
        return (longest, "max_duration") if longest < idle else (idle, "inactivity")

    def emit(user, s, reason):
        start, end = s["start"], s["last"]
        sessions.append({
            "uuid": user,
            "session_id": str(uuidlib.uuid5(SESSION_NAMESPACE, f"{user}:{start}")),
            "session_start_time_ms": start,
            "session_end_time_ms": end,
            "session_duration_seconds": (end - start) / 1000,
            "event_count": s["count"],
            "pages_visited": s["pages"],
            "session_date": datetime.fromtimestamp(start / 1000, tz=timezone.utc).date(),
            "user_hash_bucket": _bucket(user),
            "end_reason": reason,
        })

    for user, events in by_user.items():
        events.sort()
        current = None
        for ts, _, page in events:
            if current is not None:
                at, reason = expiry(current)
                if ts > at:
                    emit(user, current, reason)
                    current = None
            if current is None:
                current = {"start": ts, "last": ts, "count": 0, "pages": []}
            current["last"] = ts
            current["count"] += 1
            if page and page not in current["pages"]:
                current["pages"].append(page)
        if current is not None:
            at, reason = expiry(current)
            emit(user, current, reason if watermark > at else "end_of_input")
    return Result(sessions, len(accepted), late, duplicates, rejected)
