"""Database plumbing: one engine per URL per process, a per-worker session, migrations.

Why our own provider and not nameko-sqlalchemy: that package (1.5.0, 2019) breaks on SQLAlchemy 2
and pytest 9. This one is small: ``self.db.session`` is a session opened on first use and closed
when the worker ends; ``with self.db.transaction() as session:`` commits or rolls back as a unit.
"""
from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
import weakref
from typing import Any, Callable, Iterator

from eventlet.patcher import original
from nameko.extensions import DependencyProvider
from sqlalchemy import create_engine, event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql import Executable

from swms.config import SHARED, required

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str, pool_size: int = 10) -> Engine:
    """One engine per URL per process: the outbox relay and the workers share its pool."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _make_engine(url, pool_size)
            _engines[url] = engine
        return engine


def pool_size_for(config: dict) -> int:
    """``DB_POOL_SIZE`` if set; otherwise one connection per worker and a few for the outbox relay,
    sweepers and probes. A pool smaller than ``max_workers`` makes workers open and close overflow
    connections to PostgreSQL (a backend fork each) under load."""
    configured = SHARED.get(config, "DB_POOL_SIZE")
    return configured if configured > 0 else SHARED.get(config, "max_workers") + 4


def engine_from_config(config: dict, url_key: str = "DB_URL") -> Engine:
    """The process's engine for the service's database, its pool sized by :func:`pool_size_for`."""
    return engine_for(required(config, url_key), pool_size_for(config))


def dispose_engine(url: str) -> None:
    with _engines_lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


def _set_wal_journal(cursor, patience_seconds: float = 30.0) -> None:
    """Switch the file to WAL, waiting out other processes that open it at the same moment.

    SQLite answers "database is locked" to ``PRAGMA journal_mode`` without calling its busy handler
    while another connection recovers or checkpoints the WAL (several processes starting together
    on one file), so the wait the busy timeout gives everything else is done here by hand.
    """
    deadline = time.monotonic() + patience_seconds
    pause = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def _make_engine(url: str, pool_size: int) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            # WAL lets readers proceed while one writer commits; FKs are off by default in SQLite.
            _set_wal_journal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            # Every commit fsyncs the WAL (SQLite's default, stated here): a state change that was
            # announced, or whose number is printed on a stored PDF, must survive a power loss.
            # Only bookkeeping() commits skip it.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        return for_reads(sqlite_transactions(engine))
    # statement_timeout bounds a stuck query on the server side; pool_timeout bounds waiting for a
    # connection. Never wrap DB calls in eventlet.Timeout (it can leak pooled connections).
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=30,
        connect_args={"options": "-c statement_timeout=30000", "connect_timeout": 10},
    )
    return ping_when_in_doubt(for_reads(engine))


@contextlib.contextmanager
def bookkeeping(engine: Engine) -> Iterator:
    """A transaction whose loss in a power failure or OS crash costs only repeated work, never a
    promise: the outbox relay's lease and its "published" mark (lost, the event is published
    again, which at-least-once delivery allows and the consumers' inboxes absorb). On SQLite its
    commit skips the fsync (``synchronous=NORMAL`` for this one commit; in WAL mode the database
    stays consistent, and the next ordinary commit's fsync makes this one durable too, the WAL
    being written in order). Anywhere else it is an ordinary transaction."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:   # the safety level cannot change inside a transaction: set it before, restore after
            conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
            conn.commit()
        try:
            with conn.begin():
                yield conn
        finally:
            if sqlite:
                try:
                    conn.exec_driver_sql("PRAGMA synchronous=FULL")
                    conn.commit()
                except Exception:   # never hand a connection that skips fsync back to the pool
                    conn.invalidate()
                    raise


# A pooled connection idle for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 2.0
_select = original("select")   # not eventlet's: a zero-timeout poll, without a trip through the hub


def _has_input(dbapi_connection) -> bool:
    """Whether the server sent anything to an idle connection: a backend that ends (restart,
    shutdown, demotion, pg_terminate_backend, crash) sends FATAL and closes the socket, which makes
    it readable. A healthy idle connection has nothing to read. Costs no round trip."""
    try:
        fd = dbapi_connection.fileno()
    except Exception:   # closed on our side
        return True
    poller = _select.poll()   # not select(): a busy process may hold descriptors above 1024
    poller.register(fd, _select.POLLIN | _select.POLLPRI | _select.POLLERR | _select.POLLHUP)
    return bool(poller.poll(0))


def ping_when_in_doubt(engine: Engine) -> Engine:
    """Hand out no dead connection after a PostgreSQL restart or primary switch, without the round
    trip ``pool_pre_ping`` costs on every checkout (issue 20 goal 4: one of a sign-up lookup's five).

    A pooled connection is pinged (``SELECT 1``) when the server sent it anything while idle (how a
    restart, a switchover's demotion or ``pg_terminate_backend`` shows) or when it sat idle longer
    than :data:`PING_AFTER_IDLE_SECONDS` (a peer that vanished without closing: a host gone, a
    virtual IP moved). A failed ping invalidates the whole pool, as pre-ping does, and the checkout
    gets a new connection. Left unpinged: a connection used within the last 2 s whose server sent
    nothing; it died silently only if its old primary answered under 2 s ago and a new one answers
    at the same address now, faster than any failover completes. If it happens anyway, SQLAlchemy
    invalidates the pool on that call's disconnect error."""

    @event.listens_for(engine, "checkin")
    def _last_used(dbapi_connection, record):
        if dbapi_connection is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection, record, _proxy):
        idle_since = record.info.get("idle_since")
        if idle_since is None:   # just connected (the record's info is emptied when it reconnects)
            return
        if time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS and not _has_input(dbapi_connection):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as err:
            raise exc.InvalidatePoolError(f"ping failed: {err}") from err

    return engine


READ_ONLY = "swms_read_only"
_QUERY = re.compile(r"\s*(SELECT|SHOW)\b", re.IGNORECASE)


def for_reads(engine: Engine) -> Engine:
    """What :meth:`DatabaseAccess.reads` needs: a write there (autocommit: it would commit at once,
    alone) is refused; and on PostgreSQL every connection goes back to the pool transactional again,
    whatever happened, so that the next worker's transaction is one."""

    @event.listens_for(engine, "before_cursor_execute")
    def _refuse_writes(connection, _cursor, statement, _parameters, _context, _executemany):
        if connection.get_execution_options().get(READ_ONLY) and not _QUERY.match(statement):
            raise RuntimeError(f"a write inside DatabaseAccess.reads(): {statement[:60]!r}")

    if engine.dialect.name == "postgresql":
        @event.listens_for(engine, "checkin")
        def _transactional_again(dbapi_connection, _record):
            if dbapi_connection is not None and dbapi_connection.autocommit and not dbapi_connection.closed:
                dbapi_connection.autocommit = False

    return engine


_FIRST_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|SAVEPOINT)\b", re.IGNORECASE)


def sqlite_transactions(engine: Engine) -> Engine:
    """Make SAVEPOINTs nest inside a real transaction on a new SQLite engine (a no-op elsewhere).

    pysqlite's legacy mode sends BEGIN only before INSERT/UPDATE/DELETE/REPLACE, not before a
    SAVEPOINT, so a ``begin_nested()`` first in a transaction (``ensure_profile`` of a first change) would
    commit at its RELEASE while the rest rolls back. Here the driver sends no BEGIN at all and we
    send it before the first write *or savepoint*. Reads before that run outside a transaction,
    as in legacy mode: SQLAlchemy's own recipe (BEGIN at the first statement, usually a read)
    makes WAL keep a snapshot from that read, and a later write then fails at once with
    "database is locked" whenever another connection has committed in between."""
    if engine.dialect.name != "sqlite":
        return engine

    @event.listens_for(engine, "connect")
    def _driver_does_not_begin(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "before_cursor_execute")
    def _begin_before_first_write(connection, _cursor, statement, _parameters, _context, _executemany):
        dbapi_connection = connection.connection.dbapi_connection
        if not dbapi_connection.in_transaction and _FIRST_WRITE.match(statement):
            dbapi_connection.execute("BEGIN")

    return engine


class Upsert:
    """An INSERT ... ON CONFLICT, compiled once per database dialect and run as compiled.

    SQLAlchemy caches no statement built with the dialects' own ``insert()`` (the one with ON
    CONFLICT), so it would compile it again on every execution: about a millisecond of CPU, more
    than the database's work. ``build`` gets that ``insert()`` (SQLite's or PostgreSQL's, the same
    syntax) and returns the statement; ``columns`` are the keys of the parameters given. Several
    parameter sets go as one multi-row INSERT on PostgreSQL (insertmanyvalues)."""

    _INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}

    def __init__(self, build: Callable[[Callable], Executable], columns: list[str]):
        self._build, self._columns = build, columns
        self._compiled: dict[Dialect, Any] = {}

    def execute(self, session: Session, parameters: dict | list[dict]) -> CursorResult:
        connection = session.connection()
        dialect = connection.dialect
        compiled = self._compiled.get(dialect)
        if compiled is None:   # a race compiles it twice: harmless
            compiled = self._build(self._INSERTS[dialect.name]).compile(
                dialect=dialect, column_keys=self._columns, for_executemany=True)
            self._compiled[dialect] = compiled
        return connection.execute(compiled, parameters)


def show_written(session: Session, model, key, values: dict) -> None:
    """What a Core UPDATE wrote, onto the row's object if the session holds one (no read either way):
    the object then tells the truth for the rest of the transaction without being expired."""
    held = session.identity_map.get(identity_key(model, key))
    if held is not None:
        for name, value in values.items():
            set_committed_value(held, name, value)


def connection_of(work: Session | Connection) -> Connection:
    """Where to run a Core statement: the session's connection (its transaction), or the bare
    Connection :meth:`DatabaseAccess.reads` hands out. For code that runs in either."""
    return work if isinstance(work, Connection) else work.connection()


def read_only(engine: Engine) -> Engine:
    """The engine's connections marked for :meth:`DatabaseAccess.reads` (its pool, its events)."""
    return engine.execution_options(**{READ_ONLY: True})


class DatabaseAccess:
    def __init__(self, session_factory: sessionmaker, read_engine: Engine | None = None):
        self._session_factory = session_factory
        self._session: Session | None = None
        self._read_engine = read_engine   # built once by Database; made on first use otherwise

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = self._session_factory()
        return self._session

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        session = self.session
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise

    @contextlib.contextmanager
    def reads(self) -> Iterator[Connection]:
        """For work that only reads (a write raises): a bare Connection, no Session (Core
        statements only; an RPC that only reads pays for no session's begin, commit, close and
        identity map: issue 20 goal 4). On PostgreSQL its statements run without BEGIN and COMMIT
        (autocommit): each sees what was committed when it started, which is what every statement
        of a READ COMMITTED transaction sees anyway, and the call saves two round trips. Not for
        reads that must agree with each other (REPEATABLE READ, or read-then-write). On SQLite
        nothing changes: reads already run outside a transaction there (:func:`sqlite_transactions`).
        Use :func:`connection_of` in code that runs both here and inside a transaction."""
        if self._session is not None and self._session.in_transaction():
            raise RuntimeError("DatabaseAccess.reads() inside a transaction")
        if self._read_engine is None:
            self._read_engine = read_only(self._session_factory.kw["bind"])
        with self._read_engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # psycopg2's own switch: no round trip (SQLAlchemy's isolation_level option sends a
                # SET when the pool restores it). The pool's checkin switches it back (for_reads).
                connection.connection.dbapi_connection.autocommit = True
            yield connection   # closing it returns it to the pool; nothing to commit

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class Database(DependencyProvider):
    """Reads ``DB_URL`` from the service config."""

    def __init__(self, url_key: str = "DB_URL"):
        self.url_key = url_key
        self._open: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def setup(self):
        config = self.container.config
        self.url = required(config, self.url_key)
        self.engine = engine_from_config(config, self.url_key)
        self.session_factory = sessionmaker(self.engine, expire_on_commit=False)
        self.read_engine = read_only(self.engine)

    def stop(self):
        dispose_engine(self.url)

    def get_dependency(self, worker_ctx):
        access = DatabaseAccess(self.session_factory, self.read_engine)
        self._open[worker_ctx] = access
        return access

    def worker_teardown(self, worker_ctx):
        access = self._open.pop(worker_ctx, None)
        if access is not None:
            access.close()
