"""swms.db on PostgreSQL: no dead pooled connection is handed out although the pool no longer pings
on every checkout (``ping_when_in_doubt``), and ``DatabaseAccess.reads`` leaves no connection in
autocommit. A backend ended with pg_terminate_backend is what a PostgreSQL restart or a primary's
demotion does to every connection (tests/faults restarts the real thing)."""
from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, func, insert, select, text
from sqlalchemy.orm import sessionmaker

from swms import db as swms_db
from swms.db import DatabaseAccess, engine_for

pytestmark = pytest.mark.integration
postgresql_only = pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)

metadata = MetaData()
work = Table("work", metadata, Column("id", Integer, primary_key=True))


@pytest.fixture
def engine(make_database):
    url = make_database("identity")
    engine = engine_for(url)
    metadata.create_all(engine)
    return engine


def backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def terminate(engine, pid: int) -> None:
    """From a connection outside the pool; waits until the backend has exited (PostgreSQL ≥ 14)."""
    admin = create_engine(engine.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}).scalar_one()
    finally:
        admin.dispose()


@postgresql_only
def test_a_connection_whose_backend_ended_a_moment_ago_is_replaced_before_use(engine):
    first = backend_pid(engine)   # now pooled, used a moment ago: no idle-time ping is due
    terminate(engine, first)
    assert backend_pid(engine) != first   # answers on a new connection, no error


@postgresql_only
def test_a_connection_idle_too_long_is_pinged_even_when_its_socket_looks_quiet(engine, monkeypatch):
    # a peer that vanished without closing (a host gone, a virtual IP moved) leaves nothing to read
    monkeypatch.setattr(swms_db, "_has_input", lambda _connection: False)
    monkeypatch.setattr(swms_db, "PING_AFTER_IDLE_SECONDS", 0.0)
    first = backend_pid(engine)
    terminate(engine, first)
    assert backend_pid(engine) != first


@postgresql_only
def test_a_hot_connection_with_a_quiet_socket_is_handed_out_without_a_ping(engine, monkeypatch):
    """The saving itself: no SELECT 1 before the call's own statement."""
    statements = []
    from sqlalchemy import event
    monkeypatch.setattr(swms_db, "_has_input", lambda _connection: False)
    backend_pid(engine)
    ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: statements.append("ping") or ping(c))
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    backend_pid(engine)
    assert statements == ["SELECT pg_backend_pid()"]


def test_reads_answer_and_refuse_writes(engine):
    factory = sessionmaker(engine, expire_on_commit=False)
    access = DatabaseAccess(factory)
    with access.transaction() as session:
        session.execute(insert(work).values(id=1))
    with access.reads() as session:
        assert session.execute(select(func.count()).select_from(work)).scalar_one() == 1
    with pytest.raises(RuntimeError, match="a write inside"), access.reads() as session:
        session.execute(insert(work).values(id=2))
    with access.reads() as session:
        assert session.execute(select(func.count()).select_from(work)).scalar_one() == 1
    access.close()


def test_after_reads_the_pooled_connection_is_transactional_again(engine):
    """A connection left in autocommit would commit every statement of the next worker's
    transaction on its own: a rolled-back transaction must leave nothing behind."""
    factory = sessionmaker(engine, expire_on_commit=False)
    access = DatabaseAccess(factory)
    with access.reads() as connection:
        connection.execute(select(func.count()).select_from(work))
        if engine.dialect.name == "postgresql":
            assert connection.connection.dbapi_connection.autocommit   # no BEGIN, no COMMIT
    with pytest.raises(ZeroDivisionError), access.transaction() as session:
        session.execute(insert(work).values(id=3))
        1 / 0
    with access.reads() as session:
        assert session.execute(select(func.count()).select_from(work)).scalar_one() == 0
    access.close()



class _NoSessions(sessionmaker):
    def __call__(self, **_options):
        raise AssertionError("DatabaseAccess.reads() opened a Session")


def test_reads_open_no_session(engine):
    """The saving itself (issue 20 goal 4): work that only reads gets a bare Connection and pays for
    no Session's begin, commit and close."""
    access = DatabaseAccess(_NoSessions(engine))
    with access.reads() as connection:
        assert connection.execute(select(func.count()).select_from(work)).scalar_one() == 0
    access.close()
