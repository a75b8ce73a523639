"""Transactional outbox (events never lost) and inbox (handlers idempotent).

Producer side: ``outbox.add(session, event)`` inserts the event in the same transaction as the
state change. After the commit, :class:`OutboxRelay` publishes pending rows to the service's topic
exchange ``<service>.events`` with publisher confirms and ``mandatory`` set, then marks them sent.
A crash between publish and mark re-publishes on restart, so delivery is at-least-once: consumers
de-duplicate by ``event_id`` through :class:`Inbox`.

``mandatory`` matters: RabbitMQ drops a message that no queue is bound to. Such an event stays in
the outbox and is retried with backoff until a consumer's queue exists, instead of vanishing.
"""
from __future__ import annotations

import datetime as dt
import json
import logging

import eventlet
from nameko.amqp.publish import Publisher, UndeliverableMessage
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.standalone.events import get_event_exchange
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy import (
    event as sa_event,
)
from sqlalchemy.orm import Session

from swms.background import BackgroundLoop
from swms.contracts.events import Event
from swms.db import Upsert, bookkeeping, engine_from_config

log = logging.getLogger(__name__)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Outbox:
    def __init__(self, metadata: MetaData):
        self.table = Table(
            "outbox", metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("event_id", String(36), nullable=False, unique=True),
            Column("event_type", String(100), nullable=False),
            Column("payload", Text, nullable=False),
            Column("created_at", DateTime, nullable=False),
            Column("published_at", DateTime, nullable=True, index=True),
            Column("attempts", Integer, nullable=False, default=0),
            Column("next_attempt_at", DateTime, nullable=False),
            Column("last_error", Text, nullable=True),
        )
        self._wakers: list = []
        self._insert = insert(self.table)   # built once (costs more than the insert itself)

    def add(self, session: Session, *events: Event) -> None:
        """Several events go in one statement (a multi-row insert): one round trip, not one each."""
        now = utcnow()
        rows = [{
            "event_id": str(event.event_id), "event_type": event.event_type,
            "payload": json.dumps(event.model_dump(mode="json"), ensure_ascii=False),
            "created_at": now, "next_attempt_at": now, "attempts": 0,
        } for event in events]
        if not rows:
            return
        session.execute(self._insert, rows if len(rows) > 1 else rows[0])
        # Wake the relay only after the commit: before it, the row is invisible to the relay.
        if not session.info.get("outbox_wake_registered"):
            session.info["outbox_wake_registered"] = True
            sa_event.listen(session, "after_commit", self._after_commit, once=True)

    def _after_commit(self, session: Session) -> None:
        session.info.pop("outbox_wake_registered", None)
        self.wake_relays()

    def wake_relays(self) -> None:
        """Rows were committed (by a session, or by a Core connection that ``add`` did not see)."""
        for wake in list(self._wakers):
            wake()

    def pending_count(self, session: Session) -> int:
        from sqlalchemy import func
        return session.execute(
            select(func.count()).select_from(self.table).where(self.table.c.published_at.is_(None))
        ).scalar_one()


class OutboxRelay(BackgroundLoop):
    """Publishes committed outbox rows. Runs as a managed thread of the service container.

    Several replicas may relay the same table: on PostgreSQL rows are claimed with
    ``FOR UPDATE SKIP LOCKED`` and a lease; SQLite is single-writer anyway.
    """

    def __init__(self, outbox: Outbox, poll_seconds: float = 1.0, batch_size: int = 200,
                 lease_seconds: float = 30.0, linger_seconds: float = 0.0):
        self.outbox = outbox
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        # Wait this long after a wake before claiming: events committed meanwhile share the claim's
        # and the mark's transactions (two commits per batch instead of two per event).
        self.linger_seconds = linger_seconds
        # Built once: a relay pass in a burst claims a few rows, and building these statements
        # (and their cache keys) each pass cost about as much as running them.
        table = self.outbox.table
        self._claim = (select(table.c.id, table.c.event_id, table.c.event_type, table.c.payload, table.c.attempts)
                       .where(table.c.published_at.is_(None), table.c.next_attempt_at <= bindparam("now"))
                       .order_by(table.c.id).limit(self.batch_size).with_for_update(skip_locked=True))
        self._lease = (update(table).where(table.c.id.in_(bindparam("ids", expanding=True)))
                       .values(next_attempt_at=bindparam("until")))
        self._published = (update(table).where(table.c.id.in_(bindparam("ids", expanding=True)))
                           .values(published_at=bindparam("now"), attempts=table.c.attempts + 1, last_error=None))

    def setup(self):
        super().setup()
        config = self.container.config
        self.engine = engine_from_config(config)
        self.publisher = Publisher(config[AMQP_URI_CONFIG_KEY], serializer="json", use_confirms=True,
                                   mandatory=True, delivery_mode=2)
        self.exchange = get_event_exchange(self.container.service_name, config)

    def start(self):
        self.outbox._wakers.append(self.wake)
        super().start()

    def stop(self):
        if self.wake in self.outbox._wakers:
            self.outbox._wakers.remove(self.wake)
        super().stop()

    def run_once(self) -> int:
        if self.linger_seconds and self.running:
            eventlet.sleep(self.linger_seconds)
        return self.relay_once()

    def relay_once(self) -> int:
        """Claim a batch with a lease, publish it outside any transaction, then mark it.

        No transaction stays open while publishing: under eventlet a SQLite writer that waits for a
        lock blocks the whole hub, so a lock held across network I/O would deadlock the process.
        A replica that dies after claiming leaves rows that become due again when the lease ends;
        one that is stopping publishes no more, marks what it published and hands the rest back.
        """
        now = utcnow()
        with bookkeeping(self.engine) as conn:   # lost: published again
            rows = conn.execute(self._claim, {"now": now}).all()
            if rows:
                conn.execute(self._lease, {"ids": [r.id for r in rows],
                                           "until": now + dt.timedelta(seconds=self.lease_seconds)})
        published, unroutable = [], []
        for index, row in enumerate(rows):
            if not self.running:
                self._mark(published, unroutable, handed_back=[r.id for r in rows[index:]])
                return 0
            try:
                self.publisher.publish(
                    json.loads(row.payload), exchange=self.exchange, routing_key=row.event_type,
                    message_id=row.event_id,
                    headers={"swms.event_id": row.event_id}, declare=[self.exchange],
                )
            except UndeliverableMessage:
                unroutable.append(row)
                continue
            except Exception:
                self._mark(published, unroutable)
                raise
            published.append(row.id)
        self._mark(published, unroutable)
        return len(rows)

    def _mark(self, published: list[int], unroutable: list, handed_back: list[int] = ()) -> None:
        table = self.outbox.table
        now = utcnow()
        with bookkeeping(self.engine) as conn:   # lost: published again
            if handed_back:   # due at once for another replica or the next process, not after the lease
                conn.execute(self._lease, {"ids": list(handed_back), "until": now})
            if published:
                conn.execute(self._published, {"ids": published, "now": now})
            for row in unroutable:
                attempts = row.attempts + 1
                backoff = min(60.0, 0.5 * 2 ** min(attempts, 7))
                conn.execute(update(table).where(table.c.id == row.id).values(
                    attempts=attempts, next_attempt_at=now + dt.timedelta(seconds=backoff),
                    last_error="no queue is bound for this event yet (unroutable)"))


class Inbox:
    """Remembers handled event ids; insert in the handler's own transaction."""

    def __init__(self, metadata: MetaData):
        self.table = Table(
            "inbox", metadata,
            Column("event_id", String(36), primary_key=True),
            Column("handler", String(100), primary_key=True),
            Column("handled_at", DateTime, nullable=False),
        )
        # Every event handled runs it.
        self._first_delivery = Upsert(lambda insert: insert(self.table).on_conflict_do_nothing(),
                                      ["event_id", "handler", "handled_at"])
        # A group of deliveries (swms.events.on_events_grouped): the ids it inserted come back.
        self._first_deliveries = Upsert(
            lambda insert: insert(self.table).on_conflict_do_nothing().returning(self.table.c.event_id),
            ["event_id", "handler", "handled_at"])

    def first_delivery(self, session: Session, event_id: str, handler: str) -> bool:
        """True the first time; False if this handler already committed this event.

        One INSERT ... ON CONFLICT DO NOTHING (SQLite and PostgreSQL): the check is the write, no
        savepoint around a failing insert. A concurrent delivery of the same event waits for the
        first one's transaction (its row on PostgreSQL, the write lock on SQLite) and then finds the
        row there, or inserts it if that transaction rolled back."""
        return self._first_delivery.execute(session, {"event_id": str(event_id), "handler": handler,
                                                      "handled_at": utcnow()}).rowcount == 1

    def first_deliveries(self, session: Session, event_ids: list[str], handler: str) -> set[str]:
        """:meth:`first_delivery` for several events in one statement: the ids (each once) that this
        handler had not committed yet. Sorted, so that two groups sharing ids lock them in one order."""
        ids = sorted({str(event_id) for event_id in event_ids})
        if len(ids) <= 1:   # a group of one (most deliveries when few arrive): no RETURNING to read
            return {event_id for event_id in ids if self.first_delivery(session, event_id, handler)}
        now = utcnow()
        return set(self._first_deliveries.execute(session, [{"event_id": event_id, "handler": handler,
                                                             "handled_at": now} for event_id in ids]).scalars())
