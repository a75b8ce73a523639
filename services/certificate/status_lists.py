"""The status lists' database side (docs/trust.md): an entry for each new certificate, chosen at
random in the list being filled (herd privacy), and the bits kept equal to the certificate's
status in the same transaction as every lifecycle change.

What each status sets (a verifier reads ``validUntil`` for expiry):

=============  ==========  ==========
status         revocation  suspension
=============  ==========  ==========
issued         0           0
suspended      0           1
revoked        1           0          (final)
superseded     1           0          (re-issued: final, the old certificate is no longer current)
expired        0           0          (validUntil says it; a suspension ends with the validity)
=============  ==========  ==========
"""
from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.certificate import credentials
from services.certificate.models import REVOKED, SUPERSEDED, SUSPENDED, Certificate, StatusList

_random = secrets.SystemRandom()
MAX_TRIES = 64


def bits_for(status: str) -> dict[str, bool]:
    return {"revocation": status in (REVOKED, SUPERSEDED), "suspension": status == SUSPENDED}


# Built once, run for every certificate; the open list is read without its bits (2 × 16 KB).
_lists, _certificates = StatusList.__table__, Certificate.__table__
_OPEN = (select(_lists.c.list_number, _lists.c.allocated).order_by(_lists.c.list_number.desc()).limit(1)
         .with_for_update())
_TAKEN = (select(func.count()).select_from(_certificates)
          .where(_certificates.c.status_list == bindparam("list"), _certificates.c.status_index == bindparam("index")))
_ALLOCATED = (update(_lists).where(_lists.c.list_number == bindparam("list"))
              .values(allocated=_lists.c.allocated + 1))


def _open_list(session: Session, now: dt.datetime) -> int:
    """The number of the list new certificates go into, locked (FOR UPDATE) so that allocations
    take turns."""
    for _ in range(3):
        row = session.execute(_OPEN).first()
        if row is not None and row.allocated < credentials.LIST_FILL:
            return row.list_number
        number = 1 if row is None else row.list_number + 1
        empty = credentials.empty_bits()
        try:
            with session.begin_nested():   # Core, like the allocation's update: no stale object in the session
                session.execute(insert(_lists).values(
                    list_number=number, allocated=0, revocation_bits=empty, suspension_bits=empty, revocation_version=1,
                    suspension_version=1, revocation_updated_at=now, suspension_updated_at=now))
        except IntegrityError:
            continue   # another issuer opened it first: take that one
        return number   # inserted by this transaction: nobody else sees it before the commit
    raise RuntimeError("could not open a status list")


def allocate(session: Session, now: dt.datetime, rng=_random) -> tuple[int, int]:
    """(list number, index): a random index not yet given in the open list. Indexes are never
    reused, so a bit never speaks for two certificates."""
    number = _open_list(session, now)
    for _ in range(MAX_TRIES):
        index = rng.randrange(credentials.LIST_ENTRIES)
        if not session.execute(_TAKEN, {"list": number, "index": index}).scalar_one():
            session.execute(_ALLOCATED, {"list": number})
            return number, index
    raise RuntimeError(f"no free index found in status list {number}")   # at ≤ 50 % fill: ~1e-19


def sync(session: Session, certificate: Certificate, now: dt.datetime) -> list[str]:
    """Set the certificate's bits from its status; returns the purposes whose list changed."""
    if certificate.status_list is None:
        return []
    row = session.get(StatusList, certificate.status_list, with_for_update=True, populate_existing=True)
    changed = []
    for purpose, wanted in bits_for(certificate.status).items():
        bits = getattr(row, f"{purpose}_bits")
        if credentials.bit(bits, certificate.status_index) == wanted:
            continue
        setattr(row, f"{purpose}_bits", credentials.with_bit(bits, certificate.status_index, wanted))
        setattr(row, f"{purpose}_version", getattr(row, f"{purpose}_version") + 1)
        setattr(row, f"{purpose}_updated_at", now)
        changed.append(purpose)
    return changed


def published(session: Session, purpose: str, list_number: int) -> tuple[bytes, int, dt.datetime] | None:
    """(bits, version, updated at) of one list, or None if there is no such list."""
    if purpose not in credentials.PURPOSES:
        return None
    row = session.get(StatusList, list_number)
    if row is None:
        return None
    return (getattr(row, f"{purpose}_bits"), getattr(row, f"{purpose}_version"),
            getattr(row, f"{purpose}_updated_at"))
