"""Readiness waits for every queue consumer of the process, the event consumer included.

Nameko starts the RPC consumer and swms.deadletter's event consumer on separate connections, so a
process can answer ``health`` before its event queues exist; an event published in that gap is
refused (no exchange yet) or dropped (no queue bound yet). No broker here: the consumers are real
nameko objects that have not started (not consuming) or have signalled that they consume."""
from __future__ import annotations

from types import SimpleNamespace

from nameko.messaging import QueueConsumer
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from swms import health
from swms.deadletter import DeadLetteringQueueConsumer
from swms.ops import consumers_not_yet_consuming


def process_with(*consumers):
    container = SimpleNamespace(shared_extensions={type(c): c for c in consumers})
    return SimpleNamespace(consumers_not_yet_consuming=lambda: consumers_not_yet_consuming(container))


def consuming(consumer: QueueConsumer) -> QueueConsumer:
    consumer._consumers_ready.send(None)   # what kombu's on_consume_ready does
    return consumer


def test_a_process_whose_event_consumer_still_starts_is_not_healthy():
    db = SimpleNamespace(session=Session(create_engine("sqlite://")))
    process = process_with(consuming(QueueConsumer()), DeadLetteringQueueConsumer())
    starting = health.check("notification", db, process=process)
    assert starting.status == "degraded"
    assert starting.checks == {"database": "ok", "broker": "ok", "consumers": "starting: DeadLetteringQueueConsumer"}

    ready = health.check("notification", db, process=process_with(consuming(QueueConsumer()),
                                                                   consuming(DeadLetteringQueueConsumer())))
    assert ready.status == "ok" and ready.checks["consumers"] == "ok"


def test_other_shared_extensions_do_not_count():
    other = SimpleNamespace(_consumers_ready=None)   # e.g. nameko's RpcConsumer: not a QueueConsumer
    assert consumers_not_yet_consuming(SimpleNamespace(shared_extensions={object: other})) == []
