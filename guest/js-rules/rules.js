// The default session rules in JavaScript, on the JavaScript SDK: they cut
// the same sessions as guest/default-rules. A session ends after the
// inactivity timeout, or before it would exceed the maximum duration.
//
// Build: ../js-sdk/build.sh rules.js ../dist/js_rules.wasm

import { Limits, SessionRules, exportRules } from '../js-sdk/sessionize.js';

export class DefaultRules extends SessionRules {
  constructor(settings) {
    super();
    this.limits = Limits.fromSettings(settings);
  }

  expiry(session) {
    return this.limits.expiry(session);
  }
}

export const rules = exportRules(DefaultRules, { name: 'js-rules', version: '0.2.0' });
