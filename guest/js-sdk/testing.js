// Run rules natively, for plugin unit tests with node's test runner: one
// user's events through the same fold as the component, with batches shaped
// as componentize-js hands them over.
//
//     import { Harness, at } from './testing.js';
//     const closed = new Harness(Revenue).finish([
//       at(0, { page: 'home' }),
//       at(60_000, { fields: { 'event_details.event_value': 2.5 } }),
//     ]);
//     assert.equal(closed[0].get(REVENUE), 2.5);

import { exportRules } from './sessionize.js';

const MIN = 60_000n;

/** An event for a test at `timestampMs` (a Number or a BigInt), with an
 * optional page, event name and type, and declared fields' values by path. */
export function at(timestampMs, { page, eventName, eventType, fields = {} } = {}) {
  return { timestampMs: BigInt(timestampMs), page, eventName, eventType, fields };
}

/** Runs a rules class natively, one user's events at a time. */
export class Harness {
  constructor(RulesClass, { inactivityTimeoutMs = 30n * MIN, maxDurationMs = 120n * MIN, params = [] } = {}) {
    this.exported = exportRules(RulesClass, { name: 'test', version: '0' });
    this.exported.configure({
      inactivityTimeoutMs: BigInt(inactivityTimeoutMs),
      maxDurationMs: BigInt(maxDurationMs),
      params,
    });
    this.fields = RulesClass.fields ?? [];
    this.attributes = RulesClass.attributes ?? [];
    this.texts = [];
    this.state = undefined;
  }

  /** Applies `events` (in order) with the watermark at `watermark`; returns
   * the sessions that closed. */
  feed(events, watermark, endOfInput = false) {
    const fresh = [];
    const handle = (text) => this.handle(text, fresh);
    const raw = events.map((e) => ({
      timestampMs: e.timestampMs,
      pageName: handle(e.page),
      eventName: handle(e.eventName),
      eventType: handle(e.eventType),
    }));
    const columns = this.fields.map((field) => {
      const values = events.map((e) => e.fields[field.path]);
      switch (field.type) {
        case 'string': return { tag: 'string', val: values.map(handle) };
        case 'integer': return { tag: 'integer', val: values.map((v) => (v === undefined ? v : BigInt(v))) };
        default: return { tag: field.type, val: values };
      }
    });
    // A stored session comes back as the host lifts it: pages as a Uint32Array.
    const state = this.state && { ...this.state, pages: Uint32Array.from(this.state.pages) };
    const result = this.exported.process({
      newTexts: fresh,
      watermark: BigInt(watermark),
      endOfInput,
      users: [{ state, eventCount: raw.length }],
      events: raw,
      fields: columns,
    });
    this.state = result.users[0].state;
    return result.closed.map((c) => new Closed(c, this.attributes, this.texts));
  }

  /** Ends the input: applies `events` and closes whatever is still open. */
  finish(events) {
    const watermark = events.reduce((max, e) => (e.timestampMs > max ? e.timestampMs : max), 0n);
    return this.feed(events, watermark, true);
  }

  handle(text, fresh) {
    if (text === undefined) return undefined;
    let index = this.texts.indexOf(text);
    if (index < 0) {
      index = this.texts.push(text) - 1;
      fresh.push(text);
    }
    return index;
  }
}

/** A session a test saw closed. */
export class Closed {
  constructor(closed, attributes, texts) {
    this.startMs = closed.startMs;
    this.endMs = closed.endMs;
    this.eventCount = closed.eventCount;
    this.endReason = closed.endReason;
    this.pages = Array.from(closed.pages, (h) => texts[h]);
    this.values = new Map(attributes.map((a, i) => [a.name, closed.attributes[i]?.val]));
  }

  /** An attribute's value, or undefined. */
  get(attribute) {
    return this.values.get(attribute.name);
  }
}
