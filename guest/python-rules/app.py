"""The default session rules written in Python: proof that a rules plugin can be
any language that builds a WASI component (here with componentize-py).

Built against contract 0.1 (declares nothing, writes no attributes), so the
tests also keep a 0.1 component built from source running.

Build: componentize-py -d ../../wit/v0.1 -w session-rules componentize app -o rules.wasm
"""

import os
import sys
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types


class Rules(exports.Rules):
    def info(self) -> types.PluginInfo:
        return types.PluginInfo(name="python-rules", version="0.1.0")

    def configure(self, settings: types.Settings) -> None:
        if settings.inactivity_timeout_ms <= 0 or settings.max_duration_ms <= 0:
            raise Err("inactivity timeout and maximum duration must be positive")
        global INACTIVITY, MAX_DURATION
        INACTIVITY, MAX_DURATION = settings.inactivity_timeout_ms, settings.max_duration_ms
        # What the sandbox gives a plugin, for the host log: a frozen clock and
        # seeded randomness keep rules replayable after a crash.
        print(f"configured: clock reads {time.time()}, random bytes {os.urandom(4).hex()}")
        print("stderr reaches the host log too", file=sys.stderr)

    def process(self, batch: types.Batch) -> types.BatchResult:
        outcomes, closed = [], []
        events = iter(batch.events)
        for index, user in enumerate(batch.users):
            state = user.state
            for _ in range(user.event_count):
                event = next(events)
                if state is not None:
                    at, reason = expiry(state)
                    if event.timestamp_ms > at:
                        closed.append(close(index, state, reason))
                        state = None
                if state is None:
                    state = types.SessionState(event.timestamp_ms, event.timestamp_ms, 0, [], b"")
                state.last_ms = max(state.last_ms, event.timestamp_ms)
                state.event_count += 1
                if event.page_name is not None and event.page_name not in state.pages:
                    state.pages.append(event.page_name)
            wake_at = None
            if state is not None:
                at, reason = expiry(state)
                if batch.watermark > at:
                    closed.append(close(index, state, reason))
                    state = None
                elif batch.end_of_input:
                    closed.append(close(index, state, types.EndReason_EndOfInput()))
                    state = None
                else:
                    wake_at = at + 1
            outcomes.append(types.UserOutcome(state, wake_at))
        return types.BatchResult(outcomes, closed)


INACTIVITY = MAX_DURATION = 0


def expiry(state):
    idle, longest = state.last_ms + INACTIVITY, state.start_ms + MAX_DURATION
    if longest < idle:
        return longest, types.EndReason_MaxDuration()
    return idle, types.EndReason_Inactivity()


def close(index, state, reason):
    return types.ClosedSession(index, state.start_ms, state.last_ms, state.event_count,
                               state.pages, reason)
