"""swms.db on SQLite: a SAVEPOINT first in a transaction must nest inside it.

pysqlite's legacy transaction handling sends no BEGIN before a SAVEPOINT, so the RELEASE of a
``begin_nested()`` that opens a transaction commits on its own. ``Inbox.first_delivery`` was exactly
that: without the fix, a handler that fails after it leaves the inbox row committed, and the
redelivered event is skipped as "already handled": lost. (It is one INSERT ... ON CONFLICT DO
NOTHING now; the test keeps its guarantee.)
"""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, event, func, insert, select
from sqlalchemy.orm import Session

from swms.db import Upsert, bookkeeping, dispose_engine, engine_for, pool_size_for
from swms.outbox import Inbox


@pytest.fixture
def database(tmp_path):
    url = f"sqlite:///{tmp_path / 'inbox.db'}"
    metadata = MetaData()
    inbox = Inbox(metadata)
    work = Table("work", metadata, Column("id", Integer, primary_key=True))
    engine = engine_for(url)
    metadata.create_all(engine)
    yield engine, inbox, work
    dispose_engine(url)


def count(engine, table) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(table)).scalar_one()


def test_a_failed_handler_leaves_no_inbox_row_so_the_redelivery_is_handled(database):
    engine, inbox, work = database
    event_id = str(uuid.uuid4())
    with pytest.raises(RuntimeError), Session(engine) as session:
        assert inbox.first_delivery(session, event_id, "on_something")
        session.execute(insert(work).values(id=1))
        raise RuntimeError("the handler fails after its inbox row")  # no commit: rolled back
    assert count(engine, inbox.table) == 0 and count(engine, work) == 0

    with Session(engine) as session:  # the redelivery
        assert inbox.first_delivery(session, event_id, "on_something")
        session.execute(insert(work).values(id=1))
        session.commit()
    with Session(engine) as session:  # and a second redelivery changes nothing
        assert not inbox.first_delivery(session, event_id, "on_something")
    assert count(engine, inbox.table) == 1 and count(engine, work) == 1


def test_a_read_then_a_write_succeeds_when_another_connection_committed_in_between(database):
    """Reads before the first write run outside a transaction (as in pysqlite's legacy mode). With
    SQLAlchemy's recipe (BEGIN at the first statement) the read would pin a WAL snapshot, and the
    write after another connection's commit would fail at once with "database is locked"."""
    engine, _inbox, work = database
    with Session(engine) as reader_then_writer:
        assert reader_then_writer.execute(select(func.count()).select_from(work)).scalar_one() == 0
        with Session(engine) as other:
            other.execute(insert(work).values(id=7))
            other.commit()
        # the read sees the other commit without ending anything, and the write goes through
        assert reader_then_writer.execute(select(func.count()).select_from(work)).scalar_one() == 1
        reader_then_writer.execute(insert(work).values(id=8))
        reader_then_writer.commit()
    assert count(engine, work) == 2


def test_pool_size_follows_the_workers_unless_set():
    # A pool smaller than max_workers makes busy workers open and close overflow connections.
    assert pool_size_for({"max_workers": 30}) == 34
    assert pool_size_for({"max_workers": 30, "DB_POOL_SIZE": 0}) == 34     # config.yaml's default
    assert pool_size_for({}) == 14
    assert pool_size_for({"max_workers": 30, "DB_POOL_SIZE": "50"}) == 50


def test_an_idle_connection_whose_peer_wrote_or_closed_has_input_even_above_descriptor_1024():
    """swms.db._has_input decides whether a hot pooled connection is pinged: a PostgreSQL backend
    that ends writes FATAL and closes. A process with many sockets holds descriptors above 1024,
    where select() fails."""
    import os
    import resource
    import socket

    from swms.db import _has_input

    class Connection:
        def __init__(self, fd):
            self.fd = fd

        def fileno(self):
            return self.fd

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip("cannot open a descriptor above 1024 here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    ours, peer = socket.socketpair()
    high = os.dup2(ours.fileno(), 1300)
    try:
        assert not _has_input(Connection(high))
        peer.close()
        assert _has_input(Connection(high))
    finally:
        os.close(high)
        ours.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_upsert_is_compiled_once_and_its_conflict_decides(database):
    """SQLAlchemy caches no ON CONFLICT statement: :class:`Upsert` compiles it once per dialect."""
    engine, inbox, work = database
    built = []

    def build(dialect_insert):
        built.append(dialect_insert)
        return dialect_insert(work).on_conflict_do_nothing()

    upsert = Upsert(build, ["id"])
    with Session(engine) as session:
        assert upsert.execute(session, [{"id": 1}, {"id": 2}]).rowcount == 2
        assert upsert.execute(session, {"id": 2}).rowcount == 0      # the conflict: nothing written
        assert upsert.execute(session, {"id": 3}).rowcount == 1
        session.commit()
    assert len(built) == 1 and count(engine, work) == 3


def _safety_level_at_each_commit(engine) -> list[int]:
    """PRAGMA synchronous as each transaction on ``engine`` that wrote commits (2 = FULL: the WAL
    is fsynced; 1 = NORMAL: it is not)."""
    levels: list[int] = []

    @event.listens_for(engine, "commit")
    def _seen(connection):
        dbapi_connection = connection.connection.dbapi_connection
        if dbapi_connection.in_transaction:   # a BEGIN was sent: a write transaction
            levels.append(dbapi_connection.execute("PRAGMA synchronous").fetchone()[0])

    return levels


def test_ordinary_commits_fsync_and_bookkeeping_commits_do_not_and_leave_the_connection_as_it_was(database):
    engine, _, work = database
    levels = _safety_level_at_each_commit(engine)
    with engine.begin() as conn:
        conn.execute(insert(work).values(id=1))
    with bookkeeping(engine) as conn:
        conn.execute(insert(work).values(id=2))
    with engine.begin() as conn:   # the pool's only idle connection again: FULL once more
        conn.execute(insert(work).values(id=3))
    assert levels == [2, 1, 2]
    assert count(engine, work) == 3


def test_a_failed_bookkeeping_transaction_rolls_back_and_restores_the_safety_level(database):
    engine, _, work = database
    with pytest.raises(RuntimeError):
        with bookkeeping(engine) as conn:
            conn.execute(insert(work).values(id=1))
            raise RuntimeError("boom")
    assert count(engine, work) == 0
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2


class _Publisher:
    """Stands in for the broker (this test is about the database's commits): confirms everything."""
    def __init__(self):
        self.published: list[str] = []

    def publish(self, messages, outcome, keep_going=lambda: True):
        for index, (event_id, _routing_key, _body) in enumerate(messages):
            self.published.append(event_id)
            outcome.confirmed.add(index)
            outcome.sent = index + 1


def test_the_outbox_relays_claim_and_mark_skip_the_fsync_on_sqlite(tmp_path):
    """The relay's lease and "published" mark are bookkeeping (lost: published again); the event's
    own row was committed, with its fsync, by the state change."""
    from swms.contracts.events import ApplicationApproved
    from swms.outbox import Outbox, OutboxRelay

    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    metadata = MetaData()
    outbox = Outbox(metadata)
    engine = engine_for(url)
    try:
        metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            outbox.add(session, ApplicationApproved(
                application_id=str(uuid.uuid4()), person_id=str(uuid.uuid4()), kind="first_registration",
                region_code="110105", stage="final", final=True, decided_by="t",
                decided_at="2026-12-03T00:00:00Z"))
        levels = _safety_level_at_each_commit(engine)
        relay = OutboxRelay(outbox)
        relay.engine, relay.publisher, relay.exchange, relay._running = engine, _Publisher(), None, True
        assert relay.relay_once() == 1
        assert len(relay.publisher.published) == 1
        assert levels and all(level == 1 for level in levels)   # claim and mark: no fsync
        with Session(engine) as session:
            assert outbox.pending_count(session) == 0
    finally:
        dispose_engine(url)
