// Write Sessionize rules plugins in JavaScript (contract 0.2, wit/sessionize.wit).
//
// A plugin is one class with the rules and one `exportRules` line; the SDK
// walks each user's events in order, keeps the open session's count, pages,
// times and attribute values, closes sessions when the host's watermark passes
// their expiry, and speaks the WIT contract. It is the Rust SDK (guest/sdk)
// and the Python SDK (guest/python-sdk) in JavaScript, with the same fold and
// the same way of carrying attribute values, so a session moves between the
// three languages in a hot swap, attribute values included.
//
//     import { Attribute, Field, Limits, SessionRules, exportRules } from './sessionize.js';
//
//     const EVENT_VALUE = Field.float('event_details.event_value');
//     const REVENUE = Attribute.double('revenue', 'Sum of event values');
//
//     class Revenue extends SessionRules {
//       static fields = [EVENT_VALUE];
//       static attributes = [REVENUE];
//       constructor(settings) { super(); this.limits = Limits.fromSettings(settings); }
//       expiry(session) { return this.limits.expiry(session); }
//       observe(session, event) {
//         session.set(REVENUE, (session.get(REVENUE) ?? 0) + (event.get(EVENT_VALUE) ?? 0));
//       }
//     }
//
//     export const rules = exportRules(Revenue, { name: 'revenue-rules', version: '0.1.0' });
//
// Times are BigInt milliseconds (the contract's s64), as are `long` values;
// a missing value is `undefined`. The SDK imports nothing from the contract,
// so node runs the same file natively for unit tests (testing.js); to log,
// import `log` from 'sessionize:plugin/host@0.2.0' in the plugin itself.
// Build: build.sh beside this file (componentize-js).

const I64_MAX = (1n << 63n) - 1n;

/** Rust's i64::saturating_add, for a non-negative `b`. */
export const saturatingAdd = (a, b) => (a > I64_MAX - b ? I64_MAX : a + b);

/** Why a session ends: the contract's reasons, or a custom one. */
export const EndReason = Object.freeze({
  INACTIVITY: Object.freeze({ tag: 'inactivity' }),
  MAX_DURATION: Object.freeze({ tag: 'max-duration' }),
  END_OF_INPUT: Object.freeze({ tag: 'end-of-input' }),
  /** A plugin's own reason, for example `logout`. */
  custom: (name) => ({ tag: 'custom', val: String(name) }),
});

/** The latest event time that may still join a session, and the reason it
 * closes once time passes it. */
export class Expiry {
  constructor(at, reason) {
    this.at = at;
    this.reason = reason;
  }
}

/** Inactivity timeout plus maximum duration, for rules that build on them. */
export class Limits {
  constructor(inactivityTimeoutMs, maxDurationMs) {
    this.inactivityTimeoutMs = BigInt(inactivityTimeoutMs);
    this.maxDurationMs = BigInt(maxDurationMs);
  }

  /** The job's limits; refuses the plugin unless both are positive. */
  static fromSettings(settings) {
    if (settings.inactivityTimeoutMs <= 0n || settings.maxDurationMs <= 0n) {
      throw 'inactivity timeout and maximum duration must be positive';
    }
    return new Limits(settings.inactivityTimeoutMs, settings.maxDurationMs);
  }

  /** Whichever limit comes first ends the session: a gap of exactly the
   * timeout, or an event exactly the maximum after the start, stays. */
  expiry(session) {
    const idle = saturatingAdd(session.lastMs, this.inactivityTimeoutMs);
    const longest = saturatingAdd(session.startMs, this.maxDurationMs);
    return longest < idle
      ? new Expiry(longest, EndReason.MAX_DURATION)
      : new Expiry(idle, EndReason.INACTIVITY);
  }
}

/** An event field the rules read, by its dotted path and its type. */
export class Field {
  constructor(path, type) {
    this.path = path;
    this.type = type;
  }
  static float(path) { return new Field(path, 'float'); }
  static integer(path) { return new Field(path, 'integer'); }
  static boolean(path) { return new Field(path, 'boolean'); }
  static string(path) { return new Field(path, 'string'); }
}

/** A session attribute the rules write, an optional column of the table. */
export class Attribute {
  constructor(name, type, doc) {
    this.name = name;
    this.type = type;
    this.doc = doc;
  }
  static boolean(name, doc) { return new Attribute(name, 'boolean', doc); }
  /** Values are BigInt (a whole Number is taken too). */
  static long(name, doc) { return new Attribute(name, 'long', doc); }
  static double(name, doc) { return new Attribute(name, 'double', doc); }
  static string(name, doc) { return new Attribute(name, 'string', doc); }
  static stringList(name, doc) { return new Attribute(name, 'string-list', doc); }
}

/** The job's settings as the rules see them. */
export class Settings {
  constructor(inactivityTimeoutMs, maxDurationMs, params = []) {
    this.inactivityTimeoutMs = BigInt(inactivityTimeoutMs);
    this.maxDurationMs = BigInt(maxDurationMs);
    this.params = new Map(params);
  }
  /** A `--plugin-param` value, or undefined. */
  param(key) {
    return this.params.get(key);
  }
}

/** Extend it: set `static fields` and `static attributes`, implement the
 * constructor (it gets the Settings; throw a string to refuse them) and
 * `expiry(session)`; `split`, `endsAfter` and `observe` are optional. */
export class SessionRules {
  static fields = [];
  static attributes = [];

  expiry(session) {
    throw `${this.constructor.name} does not implement expiry(session)`;
  }

  /** A reason to close `session` before `event` joins it; by default an
   * event after the session's expiry splits. */
  split(session, event) {
    const expiry = this.expiry(session);
    return event.timestampMs > expiry.at ? expiry.reason : undefined;
  }

  /** A reason to close `session` right after `event` joined it. */
  endsAfter(session, event) {
    return undefined;
  }

  /** Called after `event` joined `session`: set attributes here. */
  observe(session, event) {}
}

export { exportRules } from './fold.js';
