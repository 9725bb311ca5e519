// The default session rules written in JavaScript: proof that a rules plugin
// can be any language that builds a WASI component (here with componentize-js).
// It cuts the same sessions as guest/default-rules: a session ends after the
// inactivity timeout, or before it would exceed the maximum duration.
//
// Contract 0.2 (wit/sessionize.wit), mapped to JS by componentize-js: records
// are objects with camelCase fields, s64 is a BigInt, u32 a number, an option
// is a value or undefined, a variant is {tag, val}, list<u8> a Uint8Array,
// a list<u32> a Uint32Array, and a thrown string becomes the `err` of a
// result (any other exception would trap, so `process` turns errors into text).
//
// Build: ./build.sh (writes guest/dist/js_rules.wasm).

import { log } from 'sessionize:plugin/host@0.2.0';

const I64_MAX = (1n << 63n) - 1n;
const INACTIVITY = { tag: 'inactivity' };
const MAX_DURATION = { tag: 'max-duration' };
const END_OF_INPUT = { tag: 'end-of-input' };

// The job's limits (BigInt milliseconds), set once by `configure`.
let inactivity = 0n;
let maxDuration = 0n;

// Rust's i64::saturating_add, for a non-negative `b`.
const add = (a, b) => (a > I64_MAX - b ? I64_MAX : a + b);

// Whichever limit comes first ends the session, and names the reason: a gap of
// exactly the timeout, or an event exactly the maximum after the start, stays.
function expiry(state) {
  const idle = add(state.lastMs, inactivity);
  const longest = add(state.startMs, maxDuration);
  return longest < idle ? [longest, MAX_DURATION] : [idle, INACTIVITY];
}

function close(user, state, endReason) {
  const { startMs, lastMs: endMs, eventCount, pages } = state;
  return { user, startMs, endMs, eventCount, pages, endReason, attributes: [] };
}

export const rules = {
  info() {
    return { name: 'js-rules', version: '0.1.0' };
  },

  configure(settings) {
    if (settings.inactivityTimeoutMs <= 0n || settings.maxDurationMs <= 0n) {
      throw 'inactivity timeout and maximum duration must be positive';
    }
    inactivity = settings.inactivityTimeoutMs;
    maxDuration = settings.maxDurationMs;
    log('debug', `configured: inactivity ${inactivity} ms, max duration ${maxDuration} ms`);
    // These rules read no event fields and write no session attributes.
    return { fields: [], attributes: [] };
  },

  process(batch) {
    try {
      return cut(batch);
    } catch (e) {
      throw e instanceof Error ? `${e}\n${e.stack}` : `${e}`;
    }
  },
};

// Applies the rules to every user of `batch`.
function cut(batch) {
  const { events, watermark, endOfInput } = batch;
  const users = [];
  const closed = [];
  let next = 0;
  batch.users.forEach((user, index) => {
    // A stored session arrives with `pages` as a Uint32Array: make it growable.
    let state = user.state && { ...user.state, pages: Array.from(user.state.pages) };
    const end = next + user.eventCount;
    if (end > events.length) throw `user ${index} claims events ${next}..${end} of ${events.length}`;
    for (; next < end; next++) {
      const { timestampMs: at, pageName: page } = events[next];
      // An event after the open session's expiry closes it and starts anew.
      if (state) {
        const [limit, reason] = expiry(state);
        if (at > limit) {
          closed.push(close(index, state, reason));
          state = undefined;
        }
      }
      if (state) {
        if (at > state.lastMs) state.lastMs = at;
        state.eventCount += 1;
      } else {
        state = { startMs: at, lastMs: at, eventCount: 1, pages: [], data: new Uint8Array(0) };
      }
      // Pages: distinct handles in order of first visit.
      if (page !== undefined && page !== null && !state.pages.includes(page)) state.pages.push(page);
    }
    // After the user's events: close what the watermark has passed, close
    // everything at end of input, and otherwise keep it, waking at expiry.
    let wakeAt;
    if (state) {
      const [limit, reason] = expiry(state);
      if (watermark > limit) {
        closed.push(close(index, state, reason));
        state = undefined;
      } else if (endOfInput) {
        closed.push(close(index, state, END_OF_INPUT));
        state = undefined;
      } else {
        wakeAt = add(limit, 1n);
      }
    }
    users.push({ state, wakeAt });
  });
  if (next !== events.length) throw `users claim ${next} of ${events.length} events`;
  return { users, closed };
}
