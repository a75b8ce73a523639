"""Consuming events idempotently, written once.

``@on_event(ApplicationApproved, inbox)`` subscribes to the event's source exchange and routing key,
validates the JSON payload into the model, and runs the handler inside one transaction together
with the inbox row, so a redelivered event (at-least-once relay, broker redelivery after a crash)
changes nothing the second time. Failures are retried with backoff and, when they cannot succeed,
dead-lettered with their reason (swms.deadletter).
"""
from __future__ import annotations

import functools
import logging
from typing import Callable


from swms.contracts.events import Event
from swms.deadletter import event_handler
from swms.outbox import Inbox

log = logging.getLogger(__name__)


def on_event(model: type[Event], inbox: Inbox, db_attribute: str = "db") -> Callable:
    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def handler(self, payload):
            event = model.model_validate(payload)
            with getattr(self, db_attribute).transaction() as session:
                if not inbox.first_delivery(session, event.event_id, method.__name__):
                    log.info("event %s already handled by %s; skipped", event.event_id, method.__name__)
                    return
                method(self, session, event)

        del handler.__wrapped__  # nameko checks the signature of what it calls: (self, payload)
        return event_handler(model.source, model.event_type)(handler)

    return decorate
