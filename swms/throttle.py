"""Rate limits kept in the service's own database, so that every replica counts together (identity:
logins, sign-up lookups, reset mails, feedback; certificate: public verification).

``throttle = Throttle(metadata)`` adds the ``throttles`` table to a service's models. A key is
``<scope>:<keyed hash>``, never a raw login or address. Two ways to count:

* ``check`` before the work and ``record_failure`` after a failure (logins: only failures count);
* ``take`` for limits on every request: checked and counted under the row's lock in one step, so
  that several processes together never let more than the limit through.

Reaching a limit locks the key for ``Limit.lock``; a locked key answers ``RATE_LIMITED`` with
``details[0].retry_after_seconds``.

The end user's address reaches a service as context data ``client_ip`` (AMQP header
``nameko.client_ip``), set by the gateway; :class:`ClientAddress` reads it.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Protocol

from nameko.extensions import DependencyProvider
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from swms import errors
from swms.db import connection_of

CLIENT_IP_KEY = "client_ip"


@dataclass(frozen=True)
class Limit:
    """At most ``max_failures`` counted events per ``window``; reaching it locks the key for ``lock``.
    The caller decides what counts: failures (logins) or every request (verification, reset mails)."""
    scope: str
    max_failures: int
    window: dt.timedelta
    lock: dt.timedelta

    @property
    def lock_minutes(self) -> int:
        return max(1, int(self.lock.total_seconds() // 60))


class KeyedHash(Protocol):
    def keyed_hash(self, purpose: str, value: str) -> str: ...


def rate_limited(until: dt.datetime, now: dt.datetime, field: str) -> errors.SwmsError:
    seconds = max(1, int((until - now).total_seconds()))
    minutes = (seconds + 59) // 60
    message = f"尝试次数过多，请于 {minutes} 分钟后再试"
    return errors.SwmsError(errors.RATE_LIMITED, message, field,
                            [{"field": field, "code": errors.RATE_LIMITED, "message": message,
                              "retry_after_seconds": seconds}])


class Throttle:
    def __init__(self, metadata: MetaData):
        self.table = Table(
            "throttles", metadata,
            Column("key", String(100), primary_key=True),
            Column("failures", Integer, nullable=False),
            Column("window_started_at", DateTime, nullable=False),
            Column("locked_until", DateTime, nullable=True),
        )
        # check's statement for n keys, built once: building a statement (and its cache key, or
        # rendering an expanding IN) costs more than the database running it, and check runs
        # before every login, sign-up lookup and verification.
        self._locks_of_keys: dict[int, object] = {}
        self._latest_locks: dict[int, object] = {}

    @staticmethod
    def key(hasher: KeyedHash, limit: Limit, value: str) -> str:
        return f"{limit.scope}:{hasher.keyed_hash(limit.scope, value)}"

    def locked_until(self, session: Session, throttle_key: str, now: dt.datetime) -> dt.datetime | None:
        row = session.execute(select(self.table.c.locked_until).where(self.table.c.key == throttle_key)).first()
        return row.locked_until if row and row.locked_until and row.locked_until > now else None

    def check(self, session: Session | Connection, keys: list[str], now: dt.datetime, field: str) -> None:
        """Raise RATE_LIMITED if any key is locked (the attempt is refused before any work). One
        statement for all the keys, on the session's connection (a plain table: nothing to flush)
        or on the Connection of ``DatabaseAccess.reads()``."""
        if not keys:
            return
        statement = self._locks_of_keys.get(len(keys))
        if statement is None:
            statement = self._locks_of_keys[len(keys)] = select(self.table.c.locked_until).where(
                self.table.c.key.in_([bindparam(f"key{n}") for n in range(len(keys))]))
        locks = connection_of(session).execute(statement, self.key_parameters(keys)).scalars()
        until = max((u for u in locks if u is not None and u > now), default=None)
        if until is not None:
            raise rate_limited(until, now, field)

    def latest_lock(self, count: int):
        """A scalar subquery, built once per count: the latest ``locked_until`` of the keys bound as
        ``key_parameters(keys)``. For a caller that reads its own row in the same statement (one
        round trip instead of two) and then calls :meth:`refuse_if_locked`."""
        subquery = self._latest_locks.get(count)
        if subquery is None:
            subquery = self._latest_locks[count] = select(func.max(self.table.c.locked_until)).where(
                self.table.c.key.in_([bindparam(f"key{n}") for n in range(count)])).scalar_subquery()
        return subquery

    @staticmethod
    def key_parameters(keys: list[str]) -> dict[str, str]:
        return {f"key{n}": key for n, key in enumerate(keys)}

    @staticmethod
    def refuse_if_locked(until: dt.datetime | None, now: dt.datetime, field: str) -> None:
        """What :meth:`check` does with the latest lock it read."""
        if until is not None and until > now:
            raise rate_limited(until, now, field)

    def _locked_row(self, session: Session, throttle_key: str, now: dt.datetime) -> dict:
        """The key's row (created if missing), locked until the transaction ends. A write comes
        first: it takes the row lock on PostgreSQL and the database's write lock on SQLite (where
        SELECT … FOR UPDATE does nothing), so no other process reads the count before we write it."""
        table = self.table
        touch = update(table).where(table.c.key == throttle_key).values(failures=table.c.failures)
        if session.execute(touch).rowcount == 0:
            try:
                with session.begin_nested():
                    session.execute(insert(table).values(key=throttle_key, failures=0, window_started_at=now,
                                                         locked_until=None))
            except IntegrityError:   # another process created it first: wait for its lock
                session.execute(touch)
        return dict(session.execute(select(table).where(table.c.key == throttle_key)).mappings().one())

    def _count(self, session: Session, row: dict, limit: Limit, now: dt.datetime) -> dt.datetime | None:
        if row["locked_until"] is not None and row["locked_until"] <= now:
            row["locked_until"] = None
        if row["window_started_at"] + limit.window <= now:
            row["failures"], row["window_started_at"] = 0, now
        row["failures"] += 1
        reached = None
        if row["failures"] >= limit.max_failures:
            row["locked_until"] = reached = now + limit.lock
            row["failures"], row["window_started_at"] = 0, now
        session.execute(update(self.table).where(self.table.c.key == row["key"]).values(
            failures=row["failures"], window_started_at=row["window_started_at"], locked_until=row["locked_until"]))
        return reached

    def record_failure(self, session: Session, throttle_key: str, limit: Limit,
                       now: dt.datetime) -> dt.datetime | None:
        """Count one failure; return the lock's end if this failure reached the limit."""
        return self._count(session, self._locked_row(session, throttle_key, now), limit, now)

    def take(self, session: Session, limits: list[tuple[str, Limit]], now: dt.datetime, field: str) -> None:
        """Count one request against each (key, limit); RATE_LIMITED if any key is locked. Refused
        requests count nowhere only if the caller rolls back, so run this in a transaction of its own."""
        self.check(session, [key for key, _ in limits], now, field)   # a locked key is refused without a row lock
        rows = [(self._locked_row(session, key, now), limit) for key, limit in sorted(limits, key=lambda p: p[0])]
        until = max((row["locked_until"] for row, _ in rows
                     if row["locked_until"] is not None and row["locked_until"] > now), default=None)
        if until is not None:
            raise rate_limited(until, now, field)
        for row, limit in rows:
            self._count(session, row, limit, now)

    def clear(self, session: Session, throttle_key: str) -> None:
        session.execute(delete(self.table).where(self.table.c.key == throttle_key))

    def purge(self, session: Session, now: dt.datetime, older_than: dt.timedelta = dt.timedelta(days=1)) -> int:
        """Drop counters whose window and lock ended long ago."""
        table, cutoff = self.table, now - older_than
        return session.execute(delete(table).where(
            table.c.window_started_at < cutoff,
            (table.c.locked_until.is_(None)) | (table.c.locked_until < cutoff))).rowcount


class ClientAddress(DependencyProvider):
    """The end user's address as the gateway passes it (context data ``client_ip``), or None.
    Used only for per-address rate limits, and only as a keyed hash."""

    def get_dependency(self, worker_ctx):
        value = worker_ctx.context_data.get(CLIENT_IP_KEY)
        if not isinstance(value, str) or len(value) > 64:
            return None
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            return None
