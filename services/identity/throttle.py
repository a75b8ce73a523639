"""Rate limits on failures (logins, verification lookups, reset requests), kept in the database so
that every replica counts together. Keys are keyed hashes, never a raw login or address."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.identity.models import Throttle
from services.identity.settings import Limit, Settings
from swms import errors


def key(settings: Settings, limit: Limit, value: str) -> str:
    return f"{limit.scope}:{settings.keyed_hash(limit.scope, value)}"


def locked_until(session: Session, throttle_key: str, now: dt.datetime) -> dt.datetime | None:
    row = session.execute(select(Throttle.locked_until).where(Throttle.key == throttle_key)).first()
    return row.locked_until if row and row.locked_until and row.locked_until > now else None


def check(session: Session, keys: list[str], now: dt.datetime, field: str) -> None:
    """Raise RATE_LIMITED if any key is locked (the attempt is refused before any work)."""
    until = max((u for u in (locked_until(session, k, now) for k in keys) if u), default=None)
    if until is not None:
        raise rate_limited(until, now, field)


def rate_limited(until: dt.datetime, now: dt.datetime, field: str) -> errors.SwmsError:
    seconds = max(1, int((until - now).total_seconds()))
    minutes = (seconds + 59) // 60
    message = f"尝试次数过多，请于 {minutes} 分钟后再试"
    return errors.SwmsError(errors.RATE_LIMITED, message, field,
                            [{"field": field, "code": errors.RATE_LIMITED, "message": message,
                              "retry_after_seconds": seconds}])


def record_failure(session: Session, throttle_key: str, limit: Limit, now: dt.datetime) -> dt.datetime | None:
    """Count one failure; return the lock's end if this failure reached the limit."""
    row = session.get(Throttle, throttle_key, with_for_update=True)
    if row is None:
        try:
            with session.begin_nested():
                row = Throttle(key=throttle_key, failures=0, window_started_at=now)
                session.add(row)
                session.flush()
        except IntegrityError:   # another replica created it first
            row = session.get(Throttle, throttle_key, with_for_update=True, populate_existing=True)
    if row.locked_until is not None and row.locked_until <= now:
        row.locked_until = None
    if row.window_started_at + limit.window <= now:
        row.failures, row.window_started_at = 0, now
    row.failures += 1
    if row.failures >= limit.max_failures:
        row.locked_until = now + limit.lock
        row.failures, row.window_started_at = 0, now
        return row.locked_until
    return None


def clear(session: Session, throttle_key: str) -> None:
    session.execute(delete(Throttle).where(Throttle.key == throttle_key))


def purge(session: Session, now: dt.datetime, older_than: dt.timedelta = dt.timedelta(days=1)) -> int:
    """Drop counters whose window and lock ended long ago (run daily: cli purge-expired)."""
    cutoff = now - older_than
    return session.execute(delete(Throttle).where(
        Throttle.window_started_at < cutoff,
        (Throttle.locked_until.is_(None)) | (Throttle.locked_until < cutoff))).rowcount
