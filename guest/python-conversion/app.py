"""The conversion rules (guest/conversion-rules) in Python, on the Python SDK:
the same sessions and the same four attributes as the Rust plugin.

Build: componentize-py -d ../../wit -w session-rules componentize app -p . -p ../python-sdk \
    -o ../dist/python_conversion.wasm
"""

from sessionize_sdk import Attribute, Field, Limits, SessionRules, export

EVENT_VALUE = Field.float("event_details.event_value")

CONVERTED = Attribute.boolean("converted", "Reached the confirmation page or had a booking event")
REVENUE = Attribute.double("revenue", "Sum of event_details.event_value over booking events")
ENTRY_PAGE = Attribute.string("entry_page", "Page of the first event")
EXIT_PAGE = Attribute.string("exit_page", "Page of the last event")


class ConversionRules(SessionRules):
    fields = [EVENT_VALUE]
    attributes = [CONVERTED, REVENUE, ENTRY_PAGE, EXIT_PAGE]

    def __init__(self, settings):
        self.limits = Limits.from_settings(settings)

    def expiry(self, session):
        return self.limits.expiry(session)

    def observe(self, session, event):
        booking = event.event_type == "booking"
        converted = booking or event.page_name == "confirmation"
        session.set(CONVERTED, converted or bool(session.get(CONVERTED)))
        value = (event.get(EVENT_VALUE) or 0.0) if booking else 0.0
        session.set(REVENUE, (session.get(REVENUE) or 0.0) + value)
        if event.page_name is not None:
            if session.get(ENTRY_PAGE) is None:
                session.set(ENTRY_PAGE, event.page_name)
            session.set(EXIT_PAGE, event.page_name)


Rules = export(ConversionRules, name="python-conversion-rules", version="0.2.0")
