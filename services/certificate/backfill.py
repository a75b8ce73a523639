"""Status-list entries and verifiable credentials for certificates issued before either existed.

A certificate issued since the status lists (docs/trust.md) gets its entry when its number is
reserved and its credential beside the PDF. One issued earlier has neither: verifiers reach it only
through the live verify page. This gives each such certificate an entry (a random free index in the
open list, as at issuance), sets its bits from its current status in the same transaction, audits
it, and then stores its credential (``certificates/<number>.vc.jwt``, first stored copy wins).

Its PDF is not touched: the QR code keeps its v1 token (number only), which the verify page still
answers. Re-issued certificates get the v2 token anyway.

Run it with the service up (``python -m services.certificate.cli add-status-entries``): each batch
locks its certificates, so a lifecycle change waits for the batch and then sets the new bits
itself. Certificates still being issued are left for a later run.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.certificate import issuing, status_lists
from services.certificate.keys import KeyRing
from services.certificate.models import ISSUING, Certificate, audit


def add_entries(session: Session, actor: str, now: dt.datetime, batch: int = 500) -> list[Certificate]:
    """Up to ``batch`` certificates without an entry get one (locked, in ``session``'s transaction)."""
    rows = list(session.execute(
        select(Certificate).where(Certificate.status_list.is_(None), Certificate.status != ISSUING)
        .order_by(Certificate.certificate_number).limit(batch).with_for_update(skip_locked=True)).scalars())
    for certificate in rows:
        certificate.status_list, certificate.status_index = status_lists.allocate(session, now)
        changed = status_lists.sync(session, certificate, now)
        audit.record(session, actor, "certificate.status_entry_added", "certificate", certificate.certificate_number,
                     {"status_list": certificate.status_list, "status_index": certificate.status_index,
                      "status": certificate.status, "bits_set": changed})
    return rows


def store_credentials(bucket, keys: KeyRing, verify_base_url: str, certificates: Iterable[Certificate]) -> int:
    """Each certificate's credential beside its PDF, unless one is there; how many were stored."""
    return sum(issuing.put_credential(bucket, certificate, keys, verify_base_url) for certificate in certificates)


def with_entries_after(session: Session, after: str, batch: int) -> list[Certificate]:
    """Certificates that have an entry, in number order after ``after`` (to walk them all)."""
    return list(session.execute(
        select(Certificate).where(Certificate.status_list.is_not(None), Certificate.status != ISSUING,
                                  Certificate.certificate_number > after)
        .order_by(Certificate.certificate_number).limit(batch)).scalars())


def run(sessions, bucket, keys: KeyRing, verify_base_url: str, actor: str, now: Callable[[], dt.datetime],
        batch: int = 500, say: Callable[[str], None] = print) -> tuple[int, int]:
    """Every certificate without an entry, batch by batch: (entries added, credentials stored).
    A batch's credentials are stored after its commit; if storage fails, the entries stay and
    ``repair_credentials`` stores what is missing."""
    added = stored = 0
    while True:
        with sessions.begin() as session:
            rows = add_entries(session, actor, now(), batch)
        if not rows:
            return added, stored
        added += len(rows)
        stored += store_credentials(bucket, keys, verify_base_url, rows)
        say(f"{added} certificates given a status-list entry, {stored} credentials stored "
            f"(last {rows[-1].certificate_number})")


def repair_credentials(sessions, bucket, keys: KeyRing, verify_base_url: str, batch: int = 500,
                       say: Callable[[str], None] = print) -> int:
    """Stores the credential of every certificate with an entry whose credential is missing."""
    after, stored = "", 0
    while True:
        with sessions() as session:
            rows = with_entries_after(session, after, batch)
        if not rows:
            return stored
        missing = [c for c in rows if not bucket.exists(issuing.credential_key(c.object_key))]
        stored += store_credentials(bucket, keys, verify_base_url, missing)
        after = rows[-1].certificate_number
        say(f"checked up to {after}: {stored} missing credentials stored")
