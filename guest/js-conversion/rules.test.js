// The conversion rules natively, with node's test runner: node --test
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Harness, at } from '../js-sdk/testing.js';
import { CONVERTED, ConversionRules, ENTRY_PAGE, EXIT_PAGE, REVENUE } from './rules.js';

const MIN = 60_000;
const value = (v) => ({ 'event_details.event_value': v });

test('a booking converts and counts its value', () => {
  const closed = new Harness(ConversionRules).finish([
    at(0, { page: 'home', fields: value(5.0) }),
    at(MIN, { page: 'hotel', eventType: 'booking', fields: value(120.5) }),
    at(2 * MIN, { eventType: 'booking', fields: value(9.5) }),
    at(3 * MIN, { page: 'account' }),
  ]);
  assert.equal(closed.length, 1);
  assert.equal(closed[0].get(CONVERTED), true);
  assert.equal(closed[0].get(REVENUE), 130.0);
  assert.equal(closed[0].get(ENTRY_PAGE), 'home');
  assert.equal(closed[0].get(EXIT_PAGE), 'account');
});

test('a confirmation page converts and carries across calls', () => {
  const h = new Harness(ConversionRules);
  assert.deepEqual(h.feed([at(0, { page: 'search' }), at(MIN, { page: 'confirmation' })], MIN), []);
  const closed = h.feed([at(2 * MIN, { page: 'home' })], 40 * MIN);
  assert.equal(closed.length, 1);
  assert.equal(closed[0].get(CONVERTED), true);
  assert.equal(closed[0].get(REVENUE), 0);
  assert.equal(closed[0].get(ENTRY_PAGE), 'search');
  assert.equal(closed[0].get(EXIT_PAGE), 'home');
});

test('an empty page name is no page', () => {
  const closed = new Harness(ConversionRules).finish([
    at(0, { page: '' }), at(MIN, { page: 'home' }), at(2 * MIN, { page: '' }),
  ]);
  assert.deepEqual(closed[0].pages, ['home']);
  assert.equal(closed[0].get(ENTRY_PAGE), 'home');
  assert.equal(closed[0].get(EXIT_PAGE), 'home');
});

test('a session without pages or bookings has no pages and did not convert', () => {
  const closed = new Harness(ConversionRules).finish([at(0), at(MIN, { fields: value(3.0) })]);
  assert.equal(closed[0].get(CONVERTED), false);
  assert.equal(closed[0].get(REVENUE), 0);
  assert.equal(closed[0].get(ENTRY_PAGE), undefined);
});
