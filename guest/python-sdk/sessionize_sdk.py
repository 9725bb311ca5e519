"""Write Sessionize rules plugins in Python (contract 0.2, `wit/sessionize.wit`).

A plugin is one class with the rules and one `export` line; the SDK walks each
user's events in order, keeps the open session's count, pages, times and
attribute values, closes sessions when the host's watermark passes their
expiry, and speaks the WIT contract. It is the Rust SDK (`guest/sdk`) in
Python, with the same semantics, so a session can move between a Rust and a
Python version of the rules in a hot swap, attribute values included.

    from sessionize_sdk import Attribute, Field, Limits, SessionRules, export

    EVENT_VALUE = Field.float("event_details.event_value")
    REVENUE = Attribute.double("revenue", "Sum of event values")

    class Revenue(SessionRules):
        fields = [EVENT_VALUE]
        attributes = [REVENUE]

        def __init__(self, settings):
            self.limits = Limits.from_settings(settings)

        def expiry(self, session):
            return self.limits.expiry(session)

        def observe(self, session, event):
            session.set(REVENUE, (session.get(REVENUE) or 0.0) + (event.get(EVENT_VALUE) or 0.0))

    Rules = export(Revenue, name="revenue-rules", version="0.1.0")

Build (the WIT world's bindings are generated at build time):

    componentize-py -d wit -w session-rules componentize app -p . -p guest/python-sdk -o rules.wasm
"""

import struct

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

__all__ = ["Attribute", "EndReason", "Expiry", "Field", "Limits", "SessionRules", "export", "log"]


class EndReason:
    """Why a session ends: the contract's reasons, or a custom one."""

    INACTIVITY = types.EndReason_Inactivity()
    MAX_DURATION = types.EndReason_MaxDuration()
    END_OF_INPUT = types.EndReason_EndOfInput()

    @staticmethod
    def custom(name):
        return types.EndReason_Custom(name)


class Expiry:
    """The latest event time that may still join a session, and the reason it
    closes once time passes it."""

    def __init__(self, at, reason):
        self.at, self.reason = at, reason


class Limits:
    """Inactivity timeout plus maximum duration, for rules that build on them."""

    def __init__(self, inactivity_timeout_ms, max_duration_ms):
        self.inactivity_timeout_ms, self.max_duration_ms = inactivity_timeout_ms, max_duration_ms

    @staticmethod
    def from_settings(settings):
        if settings.inactivity_timeout_ms <= 0 or settings.max_duration_ms <= 0:
            raise Err("inactivity timeout and maximum duration must be positive")
        return Limits(settings.inactivity_timeout_ms, settings.max_duration_ms)

    def expiry(self, session):
        """Whichever limit comes first ends the session: a gap of exactly the
        timeout, or an event exactly the maximum after the start, stays."""
        idle = session.last_ms + self.inactivity_timeout_ms
        longest = session.start_ms + self.max_duration_ms
        if longest < idle:
            return Expiry(longest, EndReason.MAX_DURATION)
        return Expiry(idle, EndReason.INACTIVITY)


class Field:
    """An event field the rules read, by its dotted path and its type."""

    def __init__(self, path, field_type):
        self.path, self.type = path, field_type

    @staticmethod
    def float(path):
        return Field(path, types.FieldType.FLOAT)

    @staticmethod
    def integer(path):
        return Field(path, types.FieldType.INTEGER)

    @staticmethod
    def boolean(path):
        return Field(path, types.FieldType.BOOLEAN)

    @staticmethod
    def string(path):
        return Field(path, types.FieldType.STRING)


class Attribute:
    """A session attribute the rules write, an optional column of the table."""

    def __init__(self, name, attribute_type, doc):
        self.name, self.type, self.doc = name, attribute_type, doc

    @staticmethod
    def boolean(name, doc):
        return Attribute(name, types.AttributeType.BOOLEAN, doc)

    @staticmethod
    def long(name, doc):
        return Attribute(name, types.AttributeType.LONG, doc)

    @staticmethod
    def double(name, doc):
        return Attribute(name, types.AttributeType.DOUBLE, doc)

    @staticmethod
    def string(name, doc):
        return Attribute(name, types.AttributeType.STRING, doc)

    @staticmethod
    def string_list(name, doc):
        return Attribute(name, types.AttributeType.STRING_LIST, doc)


class SessionRules:
    """Subclass it: set `fields` and `attributes`, implement `__init__(settings)`
    and `expiry(session)`; `split`, `ends_after` and `observe` are optional."""

    fields = []
    attributes = []

    def expiry(self, session):
        raise NotImplementedError

    def split(self, session, event):
        """A reason to close `session` before `event` joins it; by default an
        event after the session's expiry splits."""
        expiry = self.expiry(session)
        return expiry.reason if event.timestamp_ms > expiry.at else None

    def ends_after(self, session, event):
        """A reason to close `session` right after `event` joined it."""
        return None

    def observe(self, session, event):
        """Called after `event` joined `session`: set attributes here."""


def log(level, message):
    """A line in the host's log: level is one of types.LogLevel."""
    host.log(level, message)


class Event:
    """One event as the rules see it."""

    __slots__ = ("_raw", "_texts", "_columns", "_index", "_fields")

    def __init__(self, raw, texts, columns, index, fields):
        self._raw, self._texts, self._columns, self._index, self._fields = \
            raw, texts, columns, index, fields

    @property
    def timestamp_ms(self):
        return self._raw.timestamp_ms

    def _text(self, handle):
        return None if handle is None or handle >= len(self._texts) else self._texts[handle]

    @property
    def page_name(self):
        """The page the event happened on; None for an empty page name,
        which names no page."""
        return self._text(self._raw.page_name) or None

    @property
    def event_name(self):
        return self._text(self._raw.event_name)

    @property
    def event_type(self):
        return self._text(self._raw.event_type)

    def get(self, field):
        """A declared field's value, or None where the event lacks it."""
        column = self._fields.get(field.path)
        if column is None:
            raise KeyError(f"field {field.path} is read but not declared in `fields`")
        value = self._columns[column].value[self._index]
        if value is not None and field.type == types.FieldType.STRING:
            return self._text(value)
        return value


class Session:
    """The open session of the user whose events are being applied."""

    __slots__ = ("state", "values", "_names", "_texts")

    def __init__(self, state, values, names, texts):
        self.state, self.values, self._names, self._texts = state, values, names, texts

    @property
    def start_ms(self):
        return self.state.start_ms

    @property
    def last_ms(self):
        return self.state.last_ms

    @property
    def event_count(self):
        return self.state.event_count

    @property
    def pages(self):
        return [self._texts[h] for h in self.state.pages if h < len(self._texts)]

    def get(self, attribute):
        """A declared attribute's value so far, or None."""
        return self.values[self._index(attribute)]

    def set(self, attribute, value):
        """Sets a declared attribute, written when the session closes."""
        self.values[self._index(attribute)] = value

    def _index(self, attribute):
        index = self._names.get(attribute.name)
        if index is None:
            raise KeyError(f"attribute {attribute.name} is used but not declared in `attributes`")
        return index


# Attribute values travel with the open session in a section at the front of
# its `data`, laid out as the Rust SDK does (guest/sdk/src/carry.rs), so either
# SDK continues a session the other started.
MAGIC = b"\xa7S\x01"
I64_MAX = (1 << 63) - 1
TAGS = {types.AttributeType.STRING: 0, types.AttributeType.LONG: 1,
        types.AttributeType.DOUBLE: 2, types.AttributeType.BOOLEAN: 3,
        types.AttributeType.STRING_LIST: 4}


def _split(data, attributes):
    values = [None] * len(attributes)
    # A section is taken out even by rules that declare no attribute.
    if not data.startswith(MAGIC):
        return values, data
    try:
        at, count = len(MAGIC) + 1, data[len(MAGIC)]
        found = {}
        for _ in range(count):
            size = data[at]
            name = _take(data, at + 1, size).decode()
            at += 1 + size
            tag = data[at]
            at += 1
            if tag == 0:
                (size,) = struct.unpack_from("<I", data, at)
                value, at = _take(data, at + 4, size).decode(), at + 4 + size
            elif tag == 1:
                (value,), at = struct.unpack_from("<q", data, at), at + 8
            elif tag == 2:
                (value,), at = struct.unpack_from("<d", data, at), at + 8
            elif tag == 3:
                value, at = data[at] != 0, at + 1
            elif tag == 4:
                (count_items,) = struct.unpack_from("<I", data, at)
                at += 4
                value = []
                for _ in range(count_items):
                    (size,) = struct.unpack_from("<I", data, at)
                    value.append(_take(data, at + 4, size).decode())
                    at += 4 + size
            else:
                raise ValueError(tag)
            found[name] = (tag, value)
        for i, attribute in enumerate(attributes):
            if name_tag := found.get(attribute.name):
                if name_tag[0] == TAGS[attribute.type]:
                    values[i] = name_tag[1]
        return values, bytes(data[at:])
    except (IndexError, ValueError, struct.error, UnicodeDecodeError):
        # Damaged: keep the bytes as the plugin's own rather than lose them.
        return [None] * len(attributes), data


def _take(data, at, size):
    """`size` bytes at `at`, or ValueError past the end (slicing would not say)."""
    if at + size > len(data):
        raise ValueError("truncated")
    return data[at:at + size]


def _join(values, attributes, own):
    entries = [(a, v) for a, v in zip(attributes, values) if v is not None]
    if not entries and not own.startswith(MAGIC):
        return own
    out = bytearray(MAGIC)
    out.append(len(entries))
    for attribute, value in entries:
        name = attribute.name.encode()
        out.append(len(name))
        out += name
        tag = TAGS[attribute.type]
        out.append(tag)
        if tag == 0:
            raw = value.encode()
            out += struct.pack("<I", len(raw)) + raw
        elif tag == 1:
            out += struct.pack("<q", value)
        elif tag == 2:
            out += struct.pack("<d", value)
        elif tag == 3:
            out.append(1 if value else 0)
        else:
            out += struct.pack("<I", len(value))
            for item in value:
                raw = item.encode()
                out += struct.pack("<I", len(raw)) + raw
    return bytes(out + own)


def _value(attribute, value):
    kind = attribute.type
    if kind == types.AttributeType.STRING:
        return types.AttributeValue_String(value)
    if kind == types.AttributeType.LONG:
        return types.AttributeValue_Long(value)
    if kind == types.AttributeType.DOUBLE:
        return types.AttributeValue_Double(float(value))
    if kind == types.AttributeType.BOOLEAN:
        return types.AttributeValue_Boolean(bool(value))
    return types.AttributeValue_StringList(list(value))


def export(rules_class, name, version):
    """The contract's `rules` export for `rules_class`, named `name`@`version`
    (recorded with every session). Assign it to `Rules` in the app module."""
    fields = list(rules_class.fields)
    attributes = list(rules_class.attributes)
    field_index = {f.path: i for i, f in enumerate(fields)}
    names = {a.name: i for i, a in enumerate(attributes)}
    # Hooks a class leaves as SessionRules has them are not called per event.
    observes = rules_class.observe is not SessionRules.observe
    ends_after = rules_class.ends_after is not SessionRules.ends_after

    class Rules(exports.Rules):
        rules = None
        texts = []

        def info(self):
            return types.PluginInfo(name=name, version=version)

        def configure(self, settings):
            Rules.rules = rules_class(settings)
            Rules.texts = []
            return types.Declarations(
                [types.EventField(f.path, f.type) for f in fields],
                [types.SessionAttribute(a.name, a.type, a.doc) for a in attributes])

        def process(self, batch):
            rules, texts = Rules.rules, Rules.texts
            texts.extend(batch.new_texts)
            if len(batch.fields) != len(fields):
                raise Err(f"the batch has {len(batch.fields)} field columns, "
                          f"the rules declared {len(fields)}")
            outcomes, closed = [], []
            index = 0
            events, columns = batch.events, batch.fields
            for user_index, user in enumerate(batch.users):
                # One Session per open session, not per event: the fold's
                # objects are most of a Python plugin's time.
                session = None
                if user.state is not None:
                    values, user.state.data = _split(user.state.data, attributes)
                    session = Session(user.state, values, names, texts)
                for _ in range(user.event_count):
                    raw = events[index]
                    event = Event(raw, texts, columns, index, field_index)
                    index += 1
                    page = event.page_name
                    if session is not None:
                        reason = rules.split(session, event)
                        if reason is not None:
                            closed.append(_close(user_index, session, reason))
                            session = None
                    if session is None:
                        state = types.SessionState(raw.timestamp_ms, raw.timestamp_ms, 0, [], b"")
                        session = Session(state, [None] * len(attributes), names, texts)
                    state = session.state
                    if raw.timestamp_ms > state.last_ms:
                        state.last_ms = raw.timestamp_ms
                    state.event_count += 1
                    # An empty page name names no page (event.page_name is None).
                    if page is not None and raw.page_name not in state.pages:
                        state.pages.append(raw.page_name)
                    if observes:
                        rules.observe(session, event)
                    if ends_after:
                        reason = rules.ends_after(session, event)
                        if reason is not None:
                            closed.append(_close(user_index, session, reason))
                            session = None
                outcomes.append(_settle(user_index, session, rules, batch, closed))
            if index != len(batch.events):
                raise Err(f"users claim {index} of {len(batch.events)} events")
            return types.BatchResult(outcomes, closed)

    def _settle(user_index, session, rules, batch, closed):
        """After a user's events: closes what the watermark has passed, closes
        everything at end of input, and otherwise stores it, waking at expiry."""
        if session is None:
            return types.UserOutcome(None, None)
        expiry = rules.expiry(session)
        if batch.watermark > expiry.at:
            closed.append(_close(user_index, session, expiry.reason))
        elif batch.end_of_input:
            closed.append(_close(user_index, session, EndReason.END_OF_INPUT))
        else:
            state = session.state
            state.data = _join(session.values, attributes, state.data)
            return types.UserOutcome(state, min(expiry.at + 1, I64_MAX))
        return types.UserOutcome(None, None)

    def _close(user, session, reason):
        state, values = session.state, session.values
        written = [None if v is None else _value(a, v) for a, v in zip(attributes, values)]
        return types.ClosedSession(user, state.start_ms, state.last_ms, state.event_count,
                                   state.pages, reason, written)

    return Rules

