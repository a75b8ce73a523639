"""Consuming events idempotently, written once.

``@on_event(ApplicationApproved, inbox)`` subscribes to the event's source exchange and routing key,
validates the JSON payload into the model, and runs the handler inside one transaction together
with the inbox row, so a redelivered event (at-least-once relay, broker redelivery after a crash)
changes nothing the second time. Failures are retried with backoff and, when they cannot succeed,
dead-lettered with their reason (swms.deadletter).

``@on_events_grouped(FilesHeld, inbox, "held_groups")`` is the same for a handler that runs often:
deliveries arriving together in one process share one transaction (the service's
:class:`swms.grouping.Grouped` named there), one inbox statement, and the handler's statements for
all of them; the handler gets the list of events that are first deliveries. Each delivery is acked
only after its group committed; a group that fails as a whole runs again one delivery per
transaction, so a bad event fails only its own delivery.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Sequence


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


def on_events_grouped(model: type[Event], inbox: Inbox, group_attribute: str, db_attribute: str = "db") -> Callable:
    """The decorated method is ``(self, session, events: list[model])``: the group's first deliveries,
    each event once (a redelivery within the group or of an event committed before is skipped).
    ``group_attribute`` names a :class:`swms.grouping.Grouped` of this handler's own (a group runs
    its leader's handler on every item)."""
    def decorate(method: Callable) -> Callable:
        name = method.__name__

        def run_group(self, events: Sequence[Event]) -> list:
            try:
                with getattr(self, db_attribute).transaction() as session:
                    first = inbox.first_deliveries(session, [event.event_id for event in events], name)
                    todo = []
                    for event in events:
                        if str(event.event_id) in first:
                            first.discard(str(event.event_id))   # the same event twice in the group: once
                            todo.append(event)
                        else:
                            log.info("event %s already handled by %s; skipped", event.event_id, name)
                    if todo:
                        method(self, session, todo)
                return [None] * len(events)
            except Exception as exc:
                if len(events) == 1:
                    return [exc]
                log.info("a group of %d %s deliveries failed (%s); running them one by one", len(events), name, exc)
                return [run_group(self, [event])[0] for event in events]

        @functools.wraps(method)
        def handler(self, payload):
            event = model.model_validate(payload)
            getattr(self, group_attribute).run(event, lambda events: run_group(self, events))

        del handler.__wrapped__  # nameko checks the signature of what it calls: (self, payload)
        return event_handler(model.source, model.event_type)(handler)

    return decorate
