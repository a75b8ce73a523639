"""Certificate rules in plain Python: numbering, the two-step issue, validity."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.certificate.models import (
    ISSUED,
    ISSUING,
    Certificate,
    SerialCounter,
    audit,
    outbox,
)
from services.certificate.render import CertificateFace
from swms import idcard
from swms.contracts.common import Level
from swms.contracts.events import CertificateIssued
from swms.contracts.registration import IssuanceData
from swms.outbox import utcnow

LEVEL_DIGIT = {Level.ASSISTANT.value: "1", Level.SOCIAL_WORKER.value: "2", Level.SENIOR.value: "3"}


def next_number(session: Session, province: str, year: int, level: str) -> str:
    """Registration certificate number: PP YYYY L NNNNNN, 13 digits (docs/contracts.md).

    PP = province code, YYYY = issue year, L = level (1 助理, 2 社会工作师, 3 高级), NNNNNN = serial
    within that province, year and level. The counter row is locked while incremented.
    """
    scope = f"{province}{year}{LEVEL_DIGIT[level]}"
    counter = session.execute(select(SerialCounter).where(SerialCounter.scope == scope)
                              .with_for_update()).scalar_one_or_none()
    if counter is None:
        counter = SerialCounter(scope=scope, last_serial=0)
        session.add(counter)
    counter.last_serial += 1
    session.flush()
    return f"{scope}{counter.last_serial:06d}"


def add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def find_for_application(session: Session, application_id: str) -> Certificate | None:
    return session.execute(select(Certificate).where(Certificate.application_id == application_id)).scalar_one_or_none()


def start_issue(session: Session, data: IssuanceData, authority: str, validity_years: int,
                today: dt.date) -> Certificate:
    """Step 1 (one transaction): reserve a number for this application, or find the one reserved."""
    existing = find_for_application(session, data.application_id)
    if existing is not None:
        return existing
    snapshot = data.snapshot
    number = next_number(session, snapshot.region_code[:2], today.year, snapshot.level.value)
    certificate = Certificate(
        certificate_number=number, application_id=data.application_id, person_id=snapshot.person_id,
        status=ISSUING, holder_name=snapshot.name, id_number=snapshot.id_number, level=snapshot.level.value,
        region_code=snapshot.region_code, authority=authority, valid_from=today,
        valid_until=add_years(today, validity_years) - dt.timedelta(days=1),
        object_key=f"certificates/{number}.pdf", created_at=utcnow())
    session.add(certificate)
    session.flush()
    audit.record(session, "certificate", "certificate.number_reserved", "certificate", number,
                 {"application_id": data.application_id})
    return certificate


def face(certificate: Certificate, gender: str, unit_name: str, verify_base_url: str) -> CertificateFace:
    return CertificateFace(
        certificate_number=certificate.certificate_number, holder_name=certificate.holder_name, gender=gender,
        id_number_shown=certificate.id_number, level=certificate.level, unit_name=unit_name,
        authority=certificate.authority, valid_from=certificate.valid_from,
        valid_until=certificate.valid_until, issued_on=certificate.valid_from,
        verify_url=f"{verify_base_url.rstrip('/')}/{certificate.certificate_number}")


def finish_issue(session: Session, number: str, sha256: str) -> Certificate:
    """Step 3 (one transaction): mark issued and put certificate_issued in the outbox together."""
    certificate = session.get(Certificate, number, with_for_update=True)
    if certificate.status == ISSUED:
        return certificate
    certificate.status = ISSUED
    certificate.sha256 = sha256
    certificate.issued_at = utcnow()
    audit.record(session, "certificate", "certificate.issued", "certificate", number, {"sha256": sha256})
    outbox.add(session, CertificateIssued(
        certificate_number=number, application_id=certificate.application_id, person_id=certificate.person_id,
        holder_name_masked=idcard.mask_name(certificate.holder_name),
        id_number_masked=idcard.mask(certificate.id_number), level=certificate.level,
        authority=certificate.authority, region_code=certificate.region_code,
        valid_from=certificate.valid_from, valid_until=certificate.valid_until,
        issued_at=certificate.issued_at, sha256=sha256))
    return certificate
