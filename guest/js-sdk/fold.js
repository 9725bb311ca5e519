// Applies a rules class to a contract batch: the loop every plugin shares,
// the same as the Rust SDK's (guest/sdk/src/fold.rs).
//
// Values as componentize-js maps the contract: records are objects with
// camelCase fields, s64 a BigInt, an option a value or undefined, a variant
// {tag, val}, list<u8> a Uint8Array, list<u32> a Uint32Array (an Array is
// taken back), and a thrown string the `err` of a result.

import { joinCarried, splitCarried, unsetValues } from './carry.js';
import { EndReason, SessionRules, Settings, saturatingAdd } from './sessionize.js';

/** One event as the rules see it. The SDK moves one Event over a batch: read
 * it during the call, do not keep it. */
class Event {
  constructor(texts, columns, fieldIndex) {
    /** Event time, BigInt epoch milliseconds. */
    this.timestampMs = 0n;
    this.raw = undefined;
    this.index = 0;
    this.texts = texts;
    this.columns = columns;
    this.fieldIndex = fieldIndex;
  }

  /** Moves to event `index` of the batch. */
  moveTo(raw, index) {
    this.raw = raw;
    this.index = index;
    this.timestampMs = raw.timestampMs;
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

  text(handle) {
    return handle === undefined ? undefined : this.texts[handle];
  }
}

/** The open session of the user whose events are being applied: its times,
 * count and pages are the SDK's to keep (read them, do not assign them). */
class Session {
  constructor(startMs, lastMs, eventCount, pages, data, values, names, texts) {
    /** Time of the first event, BigInt milliseconds. */
    this.startMs = startMs;
    /** Time of the latest event, BigInt milliseconds. */
    this.lastMs = lastMs;
    this.eventCount = eventCount;
    /** Page handles, distinct, in order of first visit (`pages` names them). */
    this.pageHandles = pages;
    /** The plugin's own bytes (a Uint8Array), kept with the open session. */
    this.data = data;
    this.values = values;
    this.names = names;
    this.texts = texts;
  }

  /** Distinct page names in order of first visit. */
  get pages() {
    return this.pageHandles.map((h) => this.texts[h]);
  }

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

  /** The contract's session-state, attribute values carried in `data`. */
  stored(attributes) {
    // A plugin may have set `data` to any array of bytes.
    const own = this.data instanceof Uint8Array ? this.data : Uint8Array.from(this.data);
    const data = joinCarried(this.values, attributes, own);
    return {
      startMs: this.startMs,
      lastMs: this.lastMs,
      eventCount: this.eventCount,
      pages: this.pageHandles,
      data,
    };
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
  // Hooks a class leaves as SessionRules has them are not called per event.
  const own = (hook) => RulesClass.prototype[hook] !== SessionRules.prototype[hook];
  declared.observes = own('observe');
  declared.endsAfter = own('endsAfter');
  let rules;
  let texts = [];
  return {
    info() {
      return { name, version };
    },
    configure(settings) {
      const params = settings.params ?? [];
      const given = new Settings(settings.inactivityTimeoutMs, settings.maxDurationMs, params);
      rules = asText(() => new RulesClass(given));
      texts = [];
      return {
        fields: fields.map((f) => ({ path: f.path, type: f.type })),
        attributes: attributes.map((a) => ({ name: a.name, type: a.type, doc: a.doc })),
      };
    },
    process(batch) {
      if (rules === undefined) throw 'process called before configure';
      return asText(() => {
        for (const text of batch.newTexts) texts.push(text);
        return fold(rules, declared, texts, batch);
      });
    },
  };
}

/** Runs `work`, turning what it throws into text: any exception but a
 * string would trap the instance instead of refusing the plugin or failing
 * the batch with a message. */
function asText(work) {
  try {
    return work();
  } catch (e) {
    throw e instanceof Error ? `${e}\n${e.stack}` : `${e}`;
  }
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
      const raw = events[next];
      event.moveTo(raw, next);
      // An empty page name names no page.
      const page = raw.pageName !== undefined && texts[raw.pageName] ? raw.pageName : undefined;
      if (open === undefined) {
        open = start(event.timestampMs, page, declared, texts);
      } else {
        const reason = rules.split(open, event);
        if (reason === undefined || reason === null) {
          extend(open, event.timestampMs, page);
        } else {
          closed.push(close(index, open, reason, declared));
          open = start(event.timestampMs, page, declared, texts);
        }
      }
      if (declared.observes) rules.observe(open, event);
      const reason = declared.endsAfter ? rules.endsAfter(open, event) : undefined;
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
    return { state: open.stored(declared.attributes), wakeAt: saturatingAdd(expiry.at, 1n) };
  }
  return { state: undefined, wakeAt: undefined };
}

/** A stored session, with its attribute values taken out of `data`. */
function reopen(stored, declared, texts) {
  const [values, own] = splitCarried(stored.data, declared.attributes);
  const pages = Array.from(stored.pages);
  return new Session(stored.startMs, stored.lastMs, stored.eventCount, pages, own, values,
    declared.names, texts);
}

function start(at, page, declared, texts) {
  const values = unsetValues(declared.attributes.length);
  const pages = page === undefined ? [] : [page];
  return new Session(at, at, 1, pages, EMPTY, values, declared.names, texts);
}

const EMPTY = new Uint8Array(0);

function extend(session, at, page) {
  if (at > session.lastMs) session.lastMs = at;
  session.eventCount += 1;
  if (page !== undefined && !session.pageHandles.includes(page)) session.pageHandles.push(page);
}

function close(user, open, endReason, declared) {
  const attributes =
    open.values.length === 0 ? [] : open.values.map((value, i) => witValue(declared.attributes[i], value));
  return {
    user,
    startMs: open.startMs,
    endMs: open.lastMs,
    eventCount: open.eventCount,
    pages: open.pageHandles,
    endReason,
    attributes,
  };
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
