// How an open session carries its attribute values between calls: in a
// section at the front of the session's `data`, which the host stores
// verbatim, laid out as the Rust SDK does (guest/sdk/src/carry.rs), so any
// of the three SDKs continues a session another started. Values are kept by
// name and type: another version of the rules keeps those it also declares.
//
// Layout: MAGIC, a count, then per value its name (length-prefixed), a type
// tag and the value (strings as u32 length + UTF-8, numbers little-endian);
// the plugin's own bytes follow. Data without the magic is all its own.

const MAGIC = [0xa7, 0x53, 0x01];
const TAGS = { string: 0, long: 1, double: 2, boolean: 3, 'string-list': 4 };
const encoder = new TextEncoder();
// The values of rules that declare no attribute (shared: there is nothing to set).
const NO_VALUES = Object.freeze([]);

/** An open session's attribute values before any is set. */
export function unsetValues(count) {
  return count === 0 ? NO_VALUES : new Array(count).fill(undefined);
}
const decoder = new TextDecoder('utf-8', { fatal: true });

function hasMagic(data) {
  return data.length >= 3 && data[0] === MAGIC[0] && data[1] === MAGIC[1] && data[2] === MAGIC[2];
}

/** Splits `data` into the values of `attributes` (by name and type, in their
 * order) and the plugin's own bytes. Damaged data is all the plugin's own. */
export function splitCarried(data, attributes) {
  const values = unsetValues(attributes.length);
  // A section is taken out even by rules that declare no attribute.
  if (!hasMagic(data)) return [values, data];
  try {
    const reader = new Reader(data, MAGIC.length);
    const count = reader.byte();
    for (let i = 0; i < count; i++) {
      const name = decoder.decode(reader.take(reader.byte()));
      const tag = reader.byte();
      const value = reader.value(tag);
      const index = attributes.findIndex((a) => a.name === name && TAGS[a.type] === tag);
      if (index >= 0) values[index] = value;
    }
    return [values, data.slice(reader.at)];
  } catch {
    return [unsetValues(attributes.length), data];
  }
}

/** Joins attribute values and the plugin's own bytes into `data`. */
export function joinCarried(values, attributes, own) {
  const set = [];
  for (let i = 0; i < values.length; i++) {
    if (values[i] !== undefined && values[i] !== null) set.push([attributes[i], values[i]]);
  }
  if (set.length === 0 && !hasMagic(own)) return own;
  const out = new Writer();
  out.bytes(MAGIC);
  out.byte(set.length);
  for (const [attribute, value] of set) {
    const name = encoder.encode(attribute.name);
    out.byte(name.length);
    out.bytes(name);
    const tag = TAGS[attribute.type];
    out.byte(tag);
    switch (tag) {
      case 0: out.string(String(value)); break;
      case 1: out.view(8).setBigInt64(0, BigInt(value), true); break;
      case 2: out.view(8).setFloat64(0, Number(value), true); break;
      case 3: out.byte(value ? 1 : 0); break;
      default:
        out.view(4).setUint32(0, value.length, true);
        for (const item of value) out.string(String(item));
    }
  }
  out.bytes(own);
  return out.finish();
}

class Reader {
  constructor(data, at) {
    this.data = data;
    this.at = at;
  }
  take(n) {
    if (this.at + n > this.data.length) throw new RangeError('truncated');
    const bytes = this.data.subarray(this.at, this.at + n);
    this.at += n;
    return bytes;
  }
  byte() {
    return this.take(1)[0];
  }
  view(n) {
    const bytes = this.take(n);
    return new DataView(bytes.buffer, bytes.byteOffset, n);
  }
  string() {
    return decoder.decode(this.take(this.view(4).getUint32(0, true)));
  }
  value(tag) {
    switch (tag) {
      case 0: return this.string();
      case 1: return this.view(8).getBigInt64(0, true);
      case 2: return this.view(8).getFloat64(0, true);
      case 3: return this.byte() !== 0;
      case 4: {
        const count = this.view(4).getUint32(0, true);
        const list = [];
        for (let i = 0; i < count; i++) list.push(this.string());
        return list;
      }
      default: throw new RangeError(`unknown tag ${tag}`);
    }
  }
}

class Writer {
  constructor() {
    this.buffer = new Uint8Array(64);
    this.length = 0;
  }
  room(n) {
    if (this.length + n <= this.buffer.length) return;
    const grown = new Uint8Array(Math.max(this.buffer.length * 2, this.length + n));
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
  }
  byte(b) {
    this.room(1);
    this.buffer[this.length++] = b;
  }
  bytes(bytes) {
    this.room(bytes.length);
    this.buffer.set(bytes, this.length);
    this.length += bytes.length;
  }
  view(n) {
    this.room(n);
    const view = new DataView(this.buffer.buffer, this.length, n);
    this.length += n;
    return view;
  }
  string(s) {
    const raw = encoder.encode(s);
    this.view(4).setUint32(0, raw.length, true);
    this.bytes(raw);
  }
  finish() {
    return this.buffer.slice(0, this.length);
  }
}
