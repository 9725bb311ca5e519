// Applies a rules class to a contract batch: the loop every plugin shares,
// the same as the Rust SDK's (guest/sdk/src/fold.rs).
//
// Values as componentize-js maps the contract: records are objects with
// camelCase fields, s64 a BigInt, an option a value or undefined, a variant
// {tag, val}, list<u8> a Uint8Array, list<u32> a Uint32Array (an Array is
// taken back), and a thrown string the `err` of a result.

import { joinCarried, splitCarried } from './carry.js';
import { EndReason, Settings, saturatingAdd } from './sessionize.js';

/** One event as the rules see it. The SDK moves one Event over a batch: read
 * it during the call, do not keep it. */
class Event {
  constructor(texts, columns, fieldIndex) {
    this.raw = undefined;
    this.index = 0;
    this.texts = texts;
    this.columns = columns;
    this.fieldIndex = fieldIndex;
  }

  get timestampMs() {
    return this.raw.timestampMs;
  }

  /** The page the event happened on; undefined for an empty page name,
   * which names no page. */
  get pageName() {
    return this.text(this.raw.pageName) || undefined;
  }

  get eventName() {
    return this.text(this.raw.eventName);
  }

  get eventType() {
    return this.text(this.raw.eventType);
  }

  /** A declared field's value, or undefined where the event lacks it. */
  get(field) {
    const column = this.fieldIndex.get(field.path);
    if (column === undefined) throw `field ${field.path} is read but not declared in \`fields\``;
    const value = this.columns[column].val[this.index];
    return field.type === 'string' ? this.text(value) : value;
  }

  /** The page's handle in the text table, if the event names a page. */
  pageHandle() {
    const handle = this.raw.pageName;
    return this.text(handle) ? handle : undefined;
  }

  text(handle) {
    return handle === undefined ? undefined : this.texts[handle];
  }
}

/** The open session of the user whose events are being applied. */
class Session {
  constructor(state, values, names, texts) {
    this.state = state;
    this.values = values;
    this.names = names;
    this.texts = texts;
  }

  get startMs() { return this.state.startMs; }
  get lastMs() { return this.state.lastMs; }
  get eventCount() { return this.state.eventCount; }
  /** Distinct page names in order of first visit. */
  get pages() { return this.state.pages.map((h) => this.texts[h]); }
  /** The plugin's own bytes, kept with the open session. */
  get data() { return this.state.data; }
  set data(bytes) { this.state.data = Uint8Array.from(bytes); }

  /** A declared attribute's value so far, or undefined. */
  get(attribute) {
    return this.values[this.slot(attribute)];
  }

  /** Sets a declared attribute, written when the session closes. */
  set(attribute, value) {
    this.values[this.slot(attribute)] = value;
  }

  slot(attribute) {
    const index = this.names.get(attribute.name);
    if (index === undefined) {
      throw `attribute ${attribute.name} is used but not declared in \`attributes\``;
    }
    return index;
  }
}

/** The contract's `rules` export for `RulesClass`, named `name`@`version`
 * (recorded with every session): `export const rules = exportRules(...)`. */
export function exportRules(RulesClass, { name, version }) {
  const fields = [...(RulesClass.fields ?? [])];
  const attributes = [...(RulesClass.attributes ?? [])];
  const declared = {
    fields,
    attributes,
    fieldIndex: new Map(fields.map((f, i) => [f.path, i])),
    names: new Map(attributes.map((a, i) => [a.name, i])),
  };
  let rules;
  let texts = [];
  return {
    info() {
      return { name, version };
    },
    configure(settings) {
      const params = settings.params ?? [];
      rules = new RulesClass(new Settings(settings.inactivityTimeoutMs, settings.maxDurationMs, params));
      texts = [];
      return {
        fields: fields.map((f) => ({ path: f.path, type: f.type })),
        attributes: attributes.map((a) => ({ name: a.name, type: a.type, doc: a.doc })),
      };
    },
    process(batch) {
      if (rules === undefined) throw 'process called before configure';
      try {
        for (const text of batch.newTexts) texts.push(text);
        return fold(rules, declared, texts, batch);
      } catch (e) {
        // Any exception but a string would trap the instance.
        throw e instanceof Error ? `${e}\n${e.stack}` : `${e}`;
      }
    },
  };
}

/** Applies `rules` to every user of `batch`. */
function fold(rules, declared, texts, batch) {
  const { events, watermark, endOfInput } = batch;
  if (batch.fields.length !== declared.fields.length) {
    throw `the batch has ${batch.fields.length} field columns, the rules declared ${declared.fields.length}`;
  }
  const event = new Event(texts, batch.fields, declared.fieldIndex);
  const users = new Array(batch.users.length);
  const closed = [];
  let next = 0;
  for (let index = 0; index < batch.users.length; index++) {
    const user = batch.users[index];
    const end = next + user.eventCount;
    if (end > events.length) throw `user ${index} claims events ${next}..${end} of ${events.length}`;
    let open = user.state && reopen(user.state, declared, texts);
    for (; next < end; next++) {
      event.raw = events[next];
      event.index = next;
      if (open === undefined) {
        open = start(event, declared, texts);
      } else {
        const reason = rules.split(open, event);
        if (reason === undefined || reason === null) {
          extend(open.state, event);
        } else {
          closed.push(close(index, open, reason, declared));
          open = start(event, declared, texts);
        }
      }
      rules.observe(open, event);
      const reason = rules.endsAfter(open, event);
      if (reason !== undefined && reason !== null) {
        closed.push(close(index, open, reason, declared));
        open = undefined;
      }
    }
    users[index] = settle(index, open, rules, batch, declared, closed);
  }
  if (next !== events.length) throw `users claim ${next} of ${events.length} events`;
  return { users, closed };
}

/** After a user's events: closes what the watermark has passed, closes
 * everything at end of input, and otherwise stores it, waking at expiry. */
function settle(index, open, rules, batch, declared, closed) {
  if (open === undefined) return { state: undefined, wakeAt: undefined };
  const expiry = rules.expiry(open);
  if (batch.watermark > expiry.at) {
    closed.push(close(index, open, expiry.reason, declared));
  } else if (batch.endOfInput) {
    closed.push(close(index, open, EndReason.END_OF_INPUT, declared));
  } else {
    const { state, values } = open;
    state.data = joinCarried(values, declared.attributes, state.data);
    return { state, wakeAt: saturatingAdd(expiry.at, 1n) };
  }
  return { state: undefined, wakeAt: undefined };
}

/** A stored session, with its attribute values taken out of `data`. */
function reopen(stored, declared, texts) {
  const [values, own] = splitCarried(stored.data, declared.attributes);
  const state = {
    startMs: stored.startMs,
    lastMs: stored.lastMs,
    eventCount: stored.eventCount,
    pages: Array.from(stored.pages),
    data: own,
  };
  return new Session(state, values, declared.names, texts);
}

function start(event, declared, texts) {
  const at = event.timestampMs;
  const page = event.pageHandle();
  const state = {
    startMs: at,
    lastMs: at,
    eventCount: 1,
    pages: page === undefined ? [] : [page],
    data: new Uint8Array(0),
  };
  return new Session(state, new Array(declared.attributes.length).fill(undefined), declared.names, texts);
}

function extend(state, event) {
  const at = event.timestampMs;
  if (at > state.lastMs) state.lastMs = at;
  state.eventCount += 1;
  const page = event.pageHandle();
  if (page !== undefined && !state.pages.includes(page)) state.pages.push(page);
}

function close(user, open, endReason, declared) {
  const { startMs, lastMs, eventCount, pages } = open.state;
  const attributes = open.values.map((value, i) => witValue(declared.attributes[i], value));
  return { user, startMs, endMs: lastMs, eventCount, pages, endReason, attributes };
}

/** An attribute's value as the contract's variant, or undefined. */
function witValue(attribute, value) {
  if (value === undefined || value === null) return undefined;
  switch (attribute.type) {
    case 'string': return { tag: 'string', val: String(value) };
    case 'long': return { tag: 'long', val: BigInt(value) };
    case 'double': return { tag: 'double', val: Number(value) };
    case 'boolean': return { tag: 'boolean', val: Boolean(value) };
    default: return { tag: 'string-list', val: Array.from(value, String) };
  }
}
