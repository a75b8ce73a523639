"""The transactional outbox relay (swms/outbox.py), driven through a real service (registration) on
a real RabbitMQ, with SQLite and PostgreSQL: rows written to registration's outbox are published
once, in order, never dropped when no queue is bound yet, and not published twice across a
graceful stop."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import ClassVar

import pytest
from sqlalchemy import select

from services.registration.models import outbox
from swms.contracts.common import ApplicationKind
from swms.contracts.events import ApplicationSubmitted, Event
from swms.outbox import OutboxRelay
from tests.support import EventTap, service_class, session_for, wait_until

pytestmark = pytest.mark.integration


class Unrouted(Event):
    """An event type no service consumes: until a queue is bound, RabbitMQ has nowhere to put it."""
    source: ClassVar[str] = "registration"
    event_type: ClassVar[str] = "test_unrouted"
    note: str


@pytest.fixture
def registration(start_service):
    return start_service("registration")


def submitted(index: int = 0) -> ApplicationSubmitted:
    return ApplicationSubmitted(
        application_id=str(uuid.uuid4()), person_id=str(uuid.uuid4()), kind=ApplicationKind.FIRST_REGISTRATION,
        region_code="110105", applicant_name_masked="李**", submitted_at=dt.datetime.now(dt.timezone.utc),
        resubmission=bool(index % 2))


def write(config, *events: Event) -> None:
    """Commit events to registration's outbox, as its domain code does inside a state change."""
    with session_for(config["DB_URL"]) as session:
        for event in events:
            outbox.add(session, event)
        session.commit()


def row(config, event_id: str):
    table = outbox.table
    with session_for(config["DB_URL"]) as session:
        return session.execute(select(table).where(table.c.event_id == event_id)).one()


def rows(config) -> list:
    table = outbox.table
    with session_for(config["DB_URL"]) as session:
        return session.execute(select(table).order_by(table.c.id)).all()


@pytest.fixture
def taps(amqp_uri):
    opened: list[EventTap] = []

    def open_tap(event_type: str) -> EventTap:
        tap = EventTap(amqp_uri, "registration", event_type)
        opened.append(tap)
        return tap

    yield open_tap
    for tap in opened:
        tap.close()


def test_an_outbox_event_is_published_once_and_marked(registration, taps):
    tap = taps("application_submitted")
    event = submitted()
    write(registration, event)

    [body] = tap.collect(1, timeout=15)
    assert body == event.model_dump(mode="json")
    published = wait_until(lambda: (r := row(registration, event.event_id)).published_at is not None and r,
                           timeout=10, what="published_at to be set")
    assert published.attempts == 1 and published.last_error is None
    assert published.published_at >= published.created_at
    assert tap.collect(1, timeout=2.5) == []  # past two relay polls: not published again


def test_an_unroutable_event_waits_in_the_outbox_until_a_queue_is_bound(registration, taps):
    event = Unrouted(note="nobody listens yet")
    write(registration, event)

    def refused_twice():
        r = row(registration, event.event_id)
        return r.attempts >= 2 and r
    pending = wait_until(refused_twice, timeout=10, what="two unroutable attempts")
    assert pending.published_at is None
    assert "unroutable" in (pending.last_error or "")
    assert pending.next_attempt_at > pending.created_at  # backing off, not dropped

    tap = taps("test_unrouted")  # a consumer's queue appears
    # backoff after n attempts is 0.5·2^n s: the next attempt is at most a few seconds away
    [body] = tap.collect(1, timeout=20)
    assert body["event_id"] == event.event_id and body["note"] == "nobody listens yet"
    delivered = wait_until(lambda: (r := row(registration, event.event_id)).published_at is not None and r,
                           timeout=10, what="published_at to be set")
    assert delivered.attempts >= 3 and delivered.last_error is None
    assert tap.collect(1, timeout=2.5) == []


def test_a_batch_is_relayed_in_id_order(registration, taps):
    tap = taps("application_submitted")
    events = [submitted(index) for index in range(50)]
    # committed as state changes happen: some alone, some together, while the relay is running
    write(registration, *events[:1])
    write(registration, *events[1:20])
    for event in events[20:30]:
        write(registration, event)
    write(registration, *events[30:])

    bodies = tap.collect(50, timeout=30)
    written = [r.event_id for r in rows(registration)]
    assert written == [e.event_id for e in events]
    assert [b["event_id"] for b in bodies] == written
    wait_until(lambda: all(r.published_at is not None for r in rows(registration)), timeout=10,
               what="every row marked published")
    assert all(r.attempts == 1 for r in rows(registration))
    assert tap.collect(1, timeout=2.5) == []


class RelayOnly:
    """Registration's outbox relay with nothing else: stopping its container goes straight to the
    relay. (The whole service also stops its consumers first, which takes long enough that a batch
    often ends by luck; a relay on a remote broker or a bigger backlog has no such luck.)"""
    name = "registration"
    relay = OutboxRelay(outbox)


def test_a_stopping_relay_marks_what_it_published_and_hands_back_the_rest(service_config, container_factory, taps):
    """A graceful stop (SIGTERM in a rolling update) in the middle of a batch: the relay publishes no
    more, marks every event it did publish, and makes the rest due at once instead of leaving them
    leased. Before, nameko killed the relay's thread mid-batch: published events stayed unmarked
    and went out again from the next process after the lease."""
    config = service_config("registration")
    tap = taps("application_submitted")
    events = [submitted(index) for index in range(3000)]
    write(config, *events)   # a backlog the relay works through in batches of 200
    first = container_factory(RelayOnly, config)
    first.start()
    table = outbox.table

    def marked() -> int:
        with session_for(config["DB_URL"]) as session:
            return len(session.execute(select(table.c.id).where(table.c.published_at.is_not(None))).all())

    wait_until(lambda: marked() >= 400, timeout=60, interval=0.02, what="two batches relayed")
    first.stop()
    stopped_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    received = tap.collect(3000, timeout=5)
    assert 400 <= marked() < 3000, "the stop came after the backlog was done: nothing was tested"
    assert len(received) == marked()            # every published event is marked; none is marked unpublished
    pending = [r for r in rows(config) if r.published_at is None]
    assert pending and all(r.next_attempt_at <= stopped_at for r in pending)   # handed back, not leased

    second = container_factory(service_class("registration"), config)
    second.start()
    received += tap.collect(3000 - len(received), timeout=60)
    assert sorted(body["event_id"] for body in received) == sorted(event.event_id for event in events)
    assert tap.collect(1, timeout=2.5) == []     # each event once


def test_a_relay_whose_connection_the_broker_closed_publishes_the_next_event_at_once(
        registration, taps, rabbit_manager):
    """The relay keeps one connection between passes. When the broker closes it (a restart, an
    operator, a proxy's idle timeout), the next pass opens a new one: the event goes out at once,
    once, without an error and without waiting for a lease."""
    tap = taps("application_submitted")
    first, second = submitted(0), submitted(1)
    write(registration, first)
    assert [body["event_id"] for body in tap.collect(1, timeout=10)] == [first.event_id]
    vhost = registration["AMQP_URI"].rsplit("/", 1)[1]

    def relay_connections() -> list[str]:
        return [c["name"] for c in rabbit_manager.get_connections() if c.get("vhost") == vhost and
                (c.get("client_properties") or {}).get("connection_name") == "registration outbox relay"]

    wait_until(lambda: relay_connections(), timeout=10, what="the relay's connection listed by the broker")
    [closed] = relay_connections()
    rabbit_manager.delete_connection(closed)
    write(registration, second)
    # within 10 s: not after the 30 s lease a failed pass would leave on it
    assert [body["event_id"] for body in tap.collect(1, timeout=10)] == [second.event_id]
    wait_until(lambda: row(registration, second.event_id).published_at is not None, timeout=10,
               what="the event marked published")
    assert row(registration, second.event_id).last_error is None
    assert tap.collect(1, timeout=1.5) == []     # each event once
    # the broker's list refreshes every few seconds: the new connection shows, the closed one goes
    wait_until(lambda: relay_connections() and closed not in relay_connections(), timeout=20,
               what="the relay's new connection listed instead of the closed one")

