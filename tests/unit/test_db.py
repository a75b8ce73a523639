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
from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select
from sqlalchemy.orm import Session

from swms.db import Upsert, dispose_engine, engine_for, pool_size_for
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
