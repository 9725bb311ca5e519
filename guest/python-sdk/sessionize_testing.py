"""Run Sessionize rules natively, for plugin unit tests: the SDK's own fold
over one user's events, with the contract's Python bindings made by
`componentize-py -d wit -w session-rules bindings DIR` on the path.

    from sessionize_testing import Harness, at
    closed = Harness(Revenue).finish([at(0, page="home"), at(60_000, event_details__event_value=2.5)])
"""

from wit_world.imports import types

from sessionize_sdk import export

__all__ = ["Closed", "Harness", "at"]


class Harness:
    """Runs rules natively, for unit tests: one user's events through the same
    fold as the component (bindings from `componentize-py bindings`).

        closed = Harness(Revenue).finish([at(0, page="home"), at(60_000, event_details__event_value=2.5)])
        assert closed[0].get(REVENUE) == 2.5
    """

    def __init__(self, rules_class, inactivity_timeout_ms=30 * 60_000,
                 max_duration_ms=2 * 3_600_000, params=()):
        self.export = export(rules_class, "test", "0")()
        self.export.configure(types.Settings(inactivity_timeout_ms, max_duration_ms, list(params)))
        self.fields, self.attributes = rules_class.fields, rules_class.attributes
        self.texts, self.state = [], None

    def _handle(self, text, new):
        if text is None:
            return None
        if text not in self.texts:
            self.texts.append(text)
            new.append(text)
        return self.texts.index(text)

    def feed(self, events, watermark, end_of_input=False):
        """Applies `events` (in order) with the watermark at `watermark`;
        returns the sessions that closed."""
        new = []
        raw = [types.Event(e["timestamp_ms"], self._handle(e.get("page"), new), None,
                           self._handle(e.get("event_type"), new)) for e in events]
        columns = []
        for field in self.fields:
            values = [e.get("fields", {}).get(field.path) for e in events]
            if field.type == types.FieldType.STRING:
                columns.append(types.FieldValues_String([self._handle(v, new) for v in values]))
            elif field.type == types.FieldType.INTEGER:
                columns.append(types.FieldValues_Integer(values))
            elif field.type == types.FieldType.FLOAT:
                columns.append(types.FieldValues_Float(values))
            else:
                columns.append(types.FieldValues_Boolean(values))
        batch = types.Batch(new, watermark, end_of_input,
                            [types.UserSlice(self.state, len(raw))], raw, columns)
        result = self.export.process(batch)
        self.state = result.users[0].state
        return [Closed(c, self.attributes, self.texts) for c in result.closed]

    def finish(self, events):
        """Ends the input: applies `events` and closes whatever is still open."""
        watermark = max((e["timestamp_ms"] for e in events), default=0)
        return self.feed(events, watermark, end_of_input=True)


class Closed:
    """A session a test saw closed."""

    def __init__(self, closed, attributes, texts):
        self.start_ms, self.end_ms = closed.start_ms, closed.end_ms
        self.event_count, self.end_reason = closed.event_count, closed.end_reason
        self.pages = [texts[h] for h in closed.pages]
        self._values = {a.name: (None if v is None else v.value)
                        for a, v in zip(attributes, closed.attributes)}

    def get(self, attribute):
        return self._values.get(attribute.name)


def at(timestamp_ms, page=None, event_type=None, **fields):
    """An event for a test; declared fields by path with `.` as `__`
    (`event_details__event_value=2.5`)."""
    return {"timestamp_ms": timestamp_ms, "page": page, "event_type": event_type,
            "fields": {k.replace("__", "."): v for k, v in fields.items()}}
