// The conversion rules (guest/conversion-rules) in JavaScript, on the
// JavaScript SDK: the same sessions and the same four attributes as the Rust
// and Python plugins.
//
// Build: ../js-sdk/build.sh rules.js ../dist/js_conversion.wasm

import { Attribute, Field, Limits, SessionRules, exportRules } from '../js-sdk/sessionize.js';

export const EVENT_VALUE = Field.float('event_details.event_value');

export const CONVERTED = Attribute.boolean('converted', 'Reached the confirmation page or had a booking event');
export const REVENUE = Attribute.double('revenue', 'Sum of event_details.event_value over booking events');
export const ENTRY_PAGE = Attribute.string('entry_page', 'Page of the first event');
export const EXIT_PAGE = Attribute.string('exit_page', 'Page of the last event');

export class ConversionRules extends SessionRules {
  static fields = [EVENT_VALUE];
  static attributes = [CONVERTED, REVENUE, ENTRY_PAGE, EXIT_PAGE];

  constructor(settings) {
    super();
    this.limits = Limits.fromSettings(settings);
  }

  expiry(session) {
    return this.limits.expiry(session);
  }

  observe(session, event) {
    const booking = event.eventType === 'booking';
    const converted = booking || event.pageName === 'confirmation';
    session.set(CONVERTED, converted || session.get(CONVERTED) === true);
    const value = booking ? (event.get(EVENT_VALUE) ?? 0) : 0;
    session.set(REVENUE, (session.get(REVENUE) ?? 0) + value);
    const page = event.pageName;
    if (page !== undefined) {
      if (session.get(ENTRY_PAGE) === undefined) session.set(ENTRY_PAGE, page);
      session.set(EXIT_PAGE, page);
    }
  }
}

export const rules = exportRules(ConversionRules, { name: 'js-conversion-rules', version: '0.2.0' });
