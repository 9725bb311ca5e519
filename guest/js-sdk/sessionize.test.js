// The SDK's fold and attribute carrying, natively: node --test
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { joinCarried, splitCarried } from './carry.js';
import { Attribute, EndReason, Field, Limits, SessionRules, exportRules } from './sessionize.js';
import { Harness, at } from './testing.js';

const MIN = 60_000;
const TAGS = Attribute.stringList('tags', '');
const COUNT = Attribute.long('count', '');
const CONVERTED = Attribute.boolean('converted', '');
const REVENUE = Attribute.double('revenue', '');
const KIND = Field.string('event_details.kind');

class Default extends SessionRules {
  constructor(settings) {
    super();
    this.limits = Limits.fromSettings(settings);
  }
  expiry(session) {
    return this.limits.expiry(session);
  }
}

class Logout extends Default {
  static fields = [KIND];
  static attributes = [COUNT, TAGS];
  observe(session, event) {
    session.set(COUNT, (session.get(COUNT) ?? 0n) + 1n);
    const kind = event.get(KIND);
    if (kind !== undefined) session.set(TAGS, [...(session.get(TAGS) ?? []), kind]);
  }
  endsAfter(session, event) {
    return event.pageName === 'logout' ? EndReason.custom('logout') : undefined;
  }
}

test('inactivity and the maximum duration split, at exactly the limits', () => {
  const h = new Harness(Default, { inactivityTimeoutMs: 30 * MIN, maxDurationMs: 120 * MIN });
  const minutes = [0, 30, 61, 81, 101, 121, 141, 161, 181, 201];
  const closed = h.finish(minutes.map((m, i) => at(m * MIN, { page: `p${i % 2}` })));
  assert.deepEqual(
    closed.map((c) => [Number(c.startMs) / MIN, c.eventCount, c.endReason.tag]),
    [[0, 2, 'inactivity'], [61, 7, 'max-duration'], [201, 1, 'end-of-input']],
  );
  assert.deepEqual(closed[1].pages, ['p0', 'p1']);
});

test('an open session waits, wakes at its expiry and closes once the watermark passes it', () => {
  const h = new Harness(Default);
  const batch = (events, watermark) => h.feed(events, watermark);
  assert.deepEqual(batch([at(0, { page: '' }), at(MIN)], MIN), []);
  assert.equal(h.state.eventCount, 2);
  assert.deepEqual(Array.from(h.state.pages), []);
  const closed = batch([], 31 * MIN + 1);
  assert.equal(closed.length, 1);
  assert.equal(closed[0].endReason.tag, 'inactivity');
  assert.equal(closed[0].endMs, BigInt(MIN));
});

test('attributes and custom reasons carry across calls', () => {
  const h = new Harness(Logout);
  h.feed([at(0, { fields: { 'event_details.kind': 'a' } })], 0);
  const closed = h.feed([at(MIN, { page: 'logout', fields: { 'event_details.kind': 'b' } }), at(2 * MIN)], 2 * MIN);
  assert.equal(closed.length, 1);
  assert.deepEqual(closed[0].endReason, { tag: 'custom', val: 'logout' });
  assert.equal(closed[0].get(COUNT), 2n);
  assert.deepEqual(closed[0].get(TAGS), ['a', 'b']);
  assert.equal(h.state.eventCount, 1);
});

test('the carried section is byte for byte the Rust SDK\'s layout', () => {
  const attributes = [CONVERTED, REVENUE, TAGS];
  const data = joinCarried([true, undefined, ['a', 'é']], attributes, Uint8Array.of(9, 8, 7));
  // MAGIC, count 2; "converted" boolean 1; "tags" list of 2: "a", "é" (2 bytes); own bytes.
  const expected = [0xa7, 0x53, 1, 2, 9, ...Buffer.from('converted'), 3, 1,
    4, ...Buffer.from('tags'), 4, 2, 0, 0, 0, 1, 0, 0, 0, 0x61, 2, 0, 0, 0, 0xc3, 0xa9, 9, 8, 7];
  assert.deepEqual(Array.from(data), expected);
  assert.deepEqual(splitCarried(data, attributes), [[true, undefined, ['a', 'é']], Uint8Array.of(9, 8, 7)]);
  // Another version keeps what it also declares, by name and type.
  const other = [Attribute.long('converted', ''), TAGS];
  assert.deepEqual(splitCarried(data, other)[0], [undefined, ['a', 'é']]);
});

test('data without a section is all the plugin\'s own, and damage loses nothing', () => {
  const attributes = [CONVERTED, COUNT];
  const own = Uint8Array.of(1, 2, 3);
  assert.deepEqual(splitCarried(own, attributes), [[undefined, undefined], own]);
  assert.equal(joinCarried([undefined, undefined], attributes, own), own);
  const lookalike = Uint8Array.of(0xa7, 0x53, 1, 7);
  const joined = joinCarried([undefined, undefined], attributes, lookalike);
  assert.deepEqual(splitCarried(joined, attributes), [[undefined, undefined], lookalike]);
  const full = joinCarried([undefined, 5n], attributes, new Uint8Array(0));
  const damaged = full.slice(0, full.length - 3);
  assert.deepEqual(splitCarried(damaged, attributes), [[undefined, undefined], damaged]);
  assert.deepEqual(splitCarried(full, [])[1], new Uint8Array(0));
});

test('the export refuses bad settings and reports errors as text', () => {
  const exported = exportRules(Logout, { name: 'x', version: '1' });
  assert.throws(() => exported.configure({ inactivityTimeoutMs: 0n, maxDurationMs: 1n, params: [] }),
    (e) => e === 'inactivity timeout and maximum duration must be positive');
  const declared = exported.configure({ inactivityTimeoutMs: 1n, maxDurationMs: 1n, params: [] });
  assert.deepEqual(declared.fields, [{ path: 'event_details.kind', type: 'string' }]);
  assert.deepEqual(declared.attributes.map((a) => [a.name, a.type]), [['count', 'long'], ['tags', 'string-list']]);
  const bad = { newTexts: [], watermark: 0n, endOfInput: false, users: [{ eventCount: 2 }], events: [], fields: [] };
  assert.throws(() => exported.process(bad), (e) => typeof e === 'string' && e.includes('field columns'));
  bad.fields = [{ tag: 'string', val: [] }];
  assert.throws(() => exported.process(bad), (e) => e === 'user 0 claims events 0..2 of 0');
  // A constructor that throws an Error refuses the plugin with its message.
  class Picky extends Default {
    constructor(settings) {
      super(settings);
      if (settings.param('mode') === undefined) throw new Error('mode is required');
    }
  }
  const picky = exportRules(Picky, { name: 'p', version: '1' });
  assert.throws(() => picky.configure({ inactivityTimeoutMs: 1n, maxDurationMs: 1n, params: [] }),
    (e) => typeof e === 'string' && e.startsWith('Error: mode is required'));
});
