"""Certificate rules in plain Python over a SQLAlchemy session: numbering, the issue pipeline's
database steps, validity, lifecycle (revoke / suspend / reinstate / expire / supersede),
已出证待升级, and what public verification may show.

Every function that changes state does it in the caller's transaction, together with its audit
row and its outbox event, so that the change and its announcement cannot disagree.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from services.certificate import status_lists, tokens
from services.certificate.models import (
    DONE,
    EXPIRED,
    FAILED,
    HELD,
    ISSUED,
    ISSUING,
    PENDING,
    REVOKED,
    SUPERSEDED,
    SUSPENDED,
    Certificate,
    IssueRequest,
    SerialCounter,
    audit,
    outbox,
)
from swms import errors, idcard, text
from swms.auth import ADMIN, OFFICER, Caller
from swms.contracts.certificate import VerificationResult, VerificationStatus
from swms.contracts.common import ApplicationKind, Level
from swms.contracts.identity import name_key
from swms.contracts.events import (
    ApplicationApproved,
    CertificateExpired,
    CertificateIssued,
    CertificateReinstated,
    CertificateReissued,
    CertificateRevoked,
    CertificateSuspended,
    PasserLevelRaised,
)
from swms.contracts.registration import IssuanceData
from swms.db import Upsert, show_written
from swms.outbox import utcnow

LEVEL_DIGIT = {Level.ASSISTANT.value: "1", Level.SOCIAL_WORKER.value: "2", Level.SENIOR.value: "3"}
LEVEL_RANK = {Level.ASSISTANT.value: 1, Level.SOCIAL_WORKER.value: 2, Level.SENIOR.value: 3}
SYSTEM = "system"

STATUS_LABELS = {
    VerificationStatus.CURRENT: "有效",
    VerificationStatus.SUSPENDED: "已暂停",
    VerificationStatus.REVOKED: "已撤销",
    VerificationStatus.EXPIRED: "已过期",
    VerificationStatus.SUPERSEDED: "已换发（被新证书取代）",
}

# Why an approved application gets no certificate (kept on the issue request; see docs/contracts.md).
ISSUANCE_DATA_INVALID = "ISSUANCE_DATA_INVALID"
APPLICATION_NOT_FOUND = "APPLICATION_NOT_FOUND"
NAME_INVALID = "NAME_INVALID"
REGION_INVALID = "REGION_INVALID"
GENDER_MISMATCH = "GENDER_MISMATCH"
PERSON_MISMATCH = "PERSON_MISMATCH"
KIND_MISMATCH = "KIND_MISMATCH"
ALREADY_CERTIFIED = "ALREADY_CERTIFIED"
ORIGINAL_NO_REQUIRED = "ORIGINAL_NO_REQUIRED"
ORIGINAL_NO_INVALID = "ORIGINAL_NO_INVALID"
ORIGINAL_VALIDITY_INVALID = "ORIGINAL_VALIDITY_INVALID"
PREVIOUS_CERTIFICATE_NOT_FOUND = "PREVIOUS_CERTIFICATE_NOT_FOUND"
PREVIOUS_CERTIFICATE_MISMATCH = "PREVIOUS_CERTIFICATE_MISMATCH"
PREVIOUS_CERTIFICATE_REVOKED = "PREVIOUS_CERTIFICATE_REVOKED"
UPGRADE_LEVEL_NOT_HIGHER = "UPGRADE_LEVEL_NOT_HIGHER"
PHOTO_INVALID = "PHOTO_INVALID"
# ... and why it is not issued yet (retried automatically)
PHOTO_UNAVAILABLE = "PHOTO_UNAVAILABLE"
RENDER_UNAVAILABLE = "RENDER_UNAVAILABLE"
STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"

_NAME_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f<>&\"\\]")
_PROVINCES = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51,
              52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82}


# The issue pipeline's statements, built once: each certificate runs every one of them, and building
# a statement and its cache key cost more than SQLite's execution of it. Core statements on the
# tables, so no ORM synchronisation of the session's objects either: the pipeline reloads (or sets,
# set_committed_value) whatever it reads after them.
_certificates, _requests, _counters = Certificate.__table__, IssueRequest.__table__, SerialCounter.__table__
_CLAIM = (update(_requests)
          .where(_requests.c.application_id == bindparam("app"), _requests.c.status == PENDING,
                 _requests.c.next_attempt_at <= bindparam("now"))
          .values(next_attempt_at=bindparam("until"), attempts=_requests.c.attempts + 1,
                  updated_at=bindparam("now")))
# UPDATE … RETURNING (SQLite ≥ 3.35, PostgreSQL): the bump and its result in one statement.
_NEXT_SERIAL = (update(_counters).where(_counters.c.scope == bindparam("counter"))
                .values(last_serial=_counters.c.last_serial + 1).returning(_counters.c.last_serial))
_FOR_APPLICATION = (select(Certificate).where(Certificate.application_id == bindparam("app"))
                    .execution_options(populate_existing=True))
_HOLDS_ONE = (select(_certificates.c.certificate_number)
              .where(_certificates.c.person_id == bindparam("person"), _certificates.c.status.in_(HELD)).limit(1))
_ISSUED = (update(_certificates)
           .where(_certificates.c.certificate_number == bindparam("number"), _certificates.c.status == ISSUING)
           .values(status=ISSUED, sha256=bindparam("digest"), issued_at=bindparam("now"),
                   signer_fingerprint=bindparam("signer"), status_changed_at=bindparam("now"),
                   status_changed_by=SYSTEM))
# A final approval recorded and already claimed, in one statement; an application recorded before is
# left as it is (a redelivery, or the same approval twice at the same moment: exactly one inserts).
_CLAIMED_COLUMNS = ["application_id", "event_id", "person_id", "kind", "region_code", "status", "attempts",
                    "next_attempt_at", "received_at", "updated_at"]
_RECORD_CLAIMED = Upsert(lambda insert: insert(_requests).on_conflict_do_nothing(index_elements=["application_id"]),
                         _CLAIMED_COLUMNS)
_INSERT_CERTIFICATE = insert(_certificates)
_UNSET_CERTIFICATE_COLUMNS = {column.key: None for column in _certificates.columns}
_REQUEST_NUMBER = (update(_requests).where(_requests.c.application_id == bindparam("app"))
                   .values(certificate_number=bindparam("number")))
_REQUEST_DONE = (update(_requests).where(_requests.c.application_id == bindparam("app"))
                 .values(status=DONE, certificate_number=bindparam("number"), last_error_code=None,
                         last_error_field=None, last_error=None, updated_at=bindparam("now")))


class IssueRefused(Exception):
    """An approved application that cannot get a certificate until its data is corrected."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(code, message, field)
        self.code, self.message, self.field = code, message, field


class IssueDeferred(Exception):
    """Not now (a service or the photo is unavailable): the issue is retried later by itself."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(code, message, field)
        self.code, self.message, self.field = code, message, field


# ---- numbers and dates --------------------------------------------------------------------------

def next_number(session: Session, province: str, year: int, level: str) -> str:
    """Registration certificate number: PP YYYY L NNNNNN, 13 digits (docs/contracts.md).

    PP = province code, YYYY = issue year, L = level (1 助理, 2 社会工作师, 3 高级), NNNNNN = serial
    within that province, year and level. Incremented with one UPDATE (a row lock on PostgreSQL,
    the write lock on SQLite) so two issuers never read the same value; never reused."""
    scope = f"{province}{year}{LEVEL_DIGIT[level]}"
    for _ in range(3):
        serial = session.execute(_NEXT_SERIAL, {"counter": scope}).scalar_one_or_none()
        if serial is None:
            try:
                with session.begin_nested():
                    session.add(SerialCounter(scope=scope, last_serial=1))
            except IntegrityError:
                continue  # another issuer created the counter first: bump it instead
            serial = 1
        if serial > 999_999:
            raise RuntimeError(f"serial numbers exhausted for {scope}")
        return f"{scope}{serial:06d}"
    raise RuntimeError(f"could not allocate a number in {scope}")


def add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def period(start: dt.date, years: int) -> tuple[dt.date, dt.date]:
    """A validity of ``years`` starting on ``start``: 2026-11-26 → 2029-11-25 for three years."""
    return start, add_years(start, years) - dt.timedelta(days=1)


# ---- issue requests (step 0: the approval is recorded before anything can fail) ---------------

def record_approval(session: Session, event: ApplicationApproved, now: dt.datetime) -> IssueRequest:
    """Idempotent per application: a second final approval, or a redelivery, finds the first."""
    request = session.get(IssueRequest, event.application_id)
    if request is not None:
        return request
    request = IssueRequest(application_id=event.application_id, event_id=event.event_id, person_id=event.person_id,
                           kind=event.kind.value, region_code=event.region_code, status=PENDING, attempts=0,
                           next_attempt_at=now, received_at=now, updated_at=now)
    try:
        with session.begin_nested():
            session.add(request)
    except IntegrityError:  # the same approval, delivered twice at the same moment
        return session.get(IssueRequest, event.application_id, populate_existing=True)
    audit.record(session, event.decided_by, "certificate.approval_received", "application", event.application_id,
                 {"event_id": event.event_id, "kind": event.kind.value})
    return request


def record_and_claim(session: Session, event: ApplicationApproved, now: dt.datetime,
                     lease_seconds: float) -> IssueRequest | None:
    """``record_approval`` and ``claim`` in two statements instead of six (no read, no savepoint,
    no ORM flush) for the usual case, a first delivery: the request is inserted already claimed.
    An application recorded before is claimed as usual. The request if claimed, else None."""
    until = now + dt.timedelta(seconds=lease_seconds)
    values = dict(application_id=event.application_id, event_id=event.event_id, person_id=event.person_id,
                  kind=event.kind.value, region_code=event.region_code, status=PENDING, attempts=1,
                  next_attempt_at=until, received_at=now, updated_at=now)
    if _RECORD_CLAIMED.execute(session, values).rowcount == 1:
        audit.record(session, event.decided_by, "certificate.approval_received", "application",
                     event.application_id, {"event_id": event.event_id, "kind": event.kind.value})
        request = IssueRequest(**values, certificate_number=None, last_error_code=None, last_error_field=None,
                               last_error=None)
        make_transient_to_detached(request)   # the row as just written: persistent here without a read
        session.add(request)
        return request
    if not claim(session, event.application_id, now, lease_seconds):
        return None
    return session.get(IssueRequest, event.application_id, populate_existing=True)


def claim(session: Session, application_id: str, now: dt.datetime, lease_seconds: float) -> bool:
    """Take the request for ``lease_seconds``; False if done, failed, or someone else holds it."""
    until = now + dt.timedelta(seconds=lease_seconds)
    if session.execute(_CLAIM, {"app": application_id, "now": now, "until": until}).rowcount != 1:
        return False
    held = session.identity_map.get(identity_key(IssueRequest, application_id))
    if held is not None:
        show_written(session, IssueRequest, application_id,
                     {"next_attempt_at": until, "attempts": held.attempts + 1, "updated_at": now})
    return True


def due_requests(session: Session, now: dt.datetime, limit: int) -> list[str]:
    return list(session.execute(
        select(IssueRequest.application_id)
        .where(IssueRequest.status == PENDING, IssueRequest.next_attempt_at <= now)
        .order_by(IssueRequest.next_attempt_at).limit(limit)).scalars())


def backoff_seconds(attempts: int, ceiling: float) -> float:
    return min(ceiling, 5.0 * 2 ** max(0, attempts - 1))


def defer(session: Session, application_id: str, problem: IssueDeferred, now: dt.datetime, ceiling: float) -> None:
    request = session.get(IssueRequest, application_id, populate_existing=True)
    if request is None or request.status != PENDING:
        return
    request.next_attempt_at = now + dt.timedelta(seconds=backoff_seconds(request.attempts, ceiling))
    request.last_error_code, request.last_error_field, request.last_error = problem.code, problem.field, problem.message
    request.updated_at = now


def refuse(session: Session, application_id: str, problem: IssueRefused, now: dt.datetime) -> None:
    request = session.get(IssueRequest, application_id, populate_existing=True)
    if request is None or request.status != PENDING:
        return
    request.status = FAILED
    request.last_error_code, request.last_error_field, request.last_error = problem.code, problem.field, problem.message
    request.updated_at = now
    audit.record(session, SYSTEM, "certificate.issue_refused", "application", application_id,
                 {"code": problem.code, "field": problem.field, "message": problem.message})


# ---- step 1: checks and the reserved number -----------------------------------------------------

def check_issuance_data(data: IssuanceData, request: IssueRequest) -> None:
    """The submitted snapshot must make a correct certificate; refuse it otherwise (nothing stored)."""
    snapshot = data.snapshot
    if data.application_id != request.application_id:
        raise IssueRefused(ISSUANCE_DATA_INVALID, "签发数据与申请不符", "application_id")
    if snapshot.person_id != request.person_id:
        raise IssueRefused(PERSON_MISMATCH, "签发数据中的人员与审核通过的申请人不一致", "snapshot.person_id")
    if data.kind.value != request.kind:
        raise IssueRefused(KIND_MISMATCH, "签发数据中的申请类型与审核通过的申请不一致", "kind")
    found = text.problem(snapshot.name)
    if found is not None:
        raise IssueRefused(NAME_INVALID, found.message("姓名"), "snapshot.name")
    name = snapshot.name.strip()
    if not name or len(name) > 50 or _NAME_FORBIDDEN.search(name) or name != snapshot.name:
        raise IssueRefused(NAME_INVALID, "姓名为空、超过 50 个字或含有不允许的字符", "snapshot.name")
    try:
        resident = idcard.parse(snapshot.id_number)
    except idcard.InvalidIdNumber:
        raise IssueRefused(errors.ID_NUMBER_INVALID, idcard.MESSAGE, "snapshot.id_number") from None
    if snapshot.gender != resident.gender:
        raise IssueRefused(GENDER_MISMATCH, "性别与身份证号不符", "snapshot.gender")
    if not re.fullmatch(r"\d{6}", snapshot.region_code or "") or int(snapshot.region_code[:2]) not in _PROVINCES:
        raise IssueRefused(REGION_INVALID, "登记区域代码不正确", "snapshot.region_code")
    if len(snapshot.unit_name) > 100:
        raise IssueRefused(ISSUANCE_DATA_INVALID, "单位名称超过 100 个字", "snapshot.unit_name")
    found = text.problem(snapshot.unit_name)     # printed: a U+202E would make the PDF read otherwise
    if found is not None:
        raise IssueRefused(errors.TEXT_CHARACTERS_NOT_ALLOWED, found.message("单位名称"), "snapshot.unit_name")
    if data.kind == ApplicationKind.REPLACEMENT:
        number = (data.original_certificate_no or "").strip()
        if not number:
            raise IssueRefused(ORIGINAL_NO_REQUIRED, "更换电子证须填写原证书编号（NO）", "original_certificate_no")
        if not re.fullmatch(r"\d{8}", number):
            raise IssueRefused(ORIGINAL_NO_INVALID, "原证书编号（NO）应为 8 位数字", "original_certificate_no")
        start, end = data.original_valid_from, data.original_valid_until
        if (start is None) != (end is None) or (start and end and end < start):
            raise IssueRefused(ORIGINAL_VALIDITY_INVALID, "原登记有效期不完整或起止颠倒", "original_valid_until")
        if data.original_registration_type and len(data.original_registration_type) > 50:
            raise IssueRefused(ISSUANCE_DATA_INVALID, "原登记类型超过 50 个字", "original_registration_type")


def held_certificates(session: Session, person_id: str) -> list[Certificate]:
    return list(session.execute(select(Certificate).where(Certificate.person_id == person_id,
                                                          Certificate.status.in_(HELD))
                                .order_by(Certificate.created_at)).scalars())


def previous_certificate(session: Session, data: IssuanceData) -> Certificate | None:
    """The certificate a re-registration or an upgrade continues (None for the other kinds)."""
    person_id = data.snapshot.person_id
    if data.kind in (ApplicationKind.FIRST_REGISTRATION, ApplicationKind.REPLACEMENT):
        if session.execute(_HOLDS_ONE, {"person": person_id}).first() is not None:
            raise IssueRefused(ALREADY_CERTIFIED, "该人员已持有有效的电子登记证书", "person_id")
        return None
    if data.previous_certificate_number:
        previous = session.get(Certificate, data.previous_certificate_number)
        if previous is None or previous.status == ISSUING:
            raise IssueRefused(PREVIOUS_CERTIFICATE_NOT_FOUND, "原证书不存在", "previous_certificate_number")
        if previous.person_id != person_id:
            raise IssueRefused(PREVIOUS_CERTIFICATE_MISMATCH, "原证书不属于该申请人", "previous_certificate_number")
    else:
        previous = session.execute(
            select(Certificate).where(Certificate.person_id == person_id,
                                      Certificate.status.in_((ISSUED, SUSPENDED, EXPIRED, REVOKED)))
            .order_by(Certificate.created_at.desc()).limit(1)).scalar_one_or_none()
    if previous is not None and previous.status == REVOKED:
        raise IssueRefused(PREVIOUS_CERTIFICATE_REVOKED, "原证书已被撤销，不能据此换发", "previous_certificate_number")
    if data.kind == ApplicationKind.UPGRADE:
        if previous is None:
            raise IssueRefused(PREVIOUS_CERTIFICATE_NOT_FOUND, "升级换发须有原证书", "previous_certificate_number")
        if LEVEL_RANK[data.snapshot.level.value] <= LEVEL_RANK[previous.level]:
            raise IssueRefused(UPGRADE_LEVEL_NOT_HIGHER, "升级后的职业水平须高于原证书", "snapshot.level")
    if previous is not None and previous.status == SUPERSEDED:
        raise IssueRefused(PREVIOUS_CERTIFICATE_NOT_FOUND, "原证书已被换发", "previous_certificate_number")
    return previous


def reserve(session: Session, request: IssueRequest, data: IssuanceData, *, authority: str, validity_years: int,
            today: dt.date, photo_missing: bool) -> Certificate:
    """Step 1 (one transaction): the number for this application, or the one already reserved."""
    existing = find_for_application(session, data.application_id)
    if existing is not None:
        return existing
    check_issuance_data(data, request)
    previous = previous_certificate(session, data)
    snapshot = data.snapshot
    valid_from, valid_until = period(today, validity_years)
    if data.kind == ApplicationKind.REPLACEMENT and data.original_valid_from and data.original_valid_until:
        valid_from, valid_until = data.original_valid_from, data.original_valid_until  # as on the paper one
    elif data.kind == ApplicationKind.RE_REGISTRATION and previous is not None and previous.valid_until >= today:
        valid_from, valid_until = period(previous.valid_until + dt.timedelta(days=1), validity_years)  # no gap
    number = next_number(session, snapshot.region_code[:2], today.year, snapshot.level.value)
    status_list, status_index = status_lists.allocate(session, utcnow())   # its place in the status lists
    values = dict(
        _UNSET_CERTIFICATE_COLUMNS,
        certificate_number=number, application_id=data.application_id, person_id=snapshot.person_id,
        kind=data.kind.value, status=ISSUING, holder_name=snapshot.name, id_number=idcard.parse(snapshot.id_number).number,
        gender=snapshot.gender, level=snapshot.level.value, region_code=snapshot.region_code,
        unit_name=snapshot.unit_name, photo_key=snapshot.photo_key, photo_missing=photo_missing, authority=authority,
        valid_from=valid_from, valid_until=valid_until, issued_on=today, object_key=f"certificates/{number}.pdf",
        created_at=utcnow(), supersedes=previous.certificate_number if previous is not None else None,
        original_certificate_no=(data.original_certificate_no or "").strip() or None,
        original_registration_type=data.original_registration_type,
        original_valid_from=data.original_valid_from, original_valid_until=data.original_valid_until,
        status_list=status_list, status_index=status_index)
    # Core statements, not the unit of work (its flush cost more than the rest of the reservation);
    # the row's object goes into the session as written, every column set, so nothing is read back.
    session.execute(_INSERT_CERTIFICATE, values)
    certificate = Certificate(**values)
    make_transient_to_detached(certificate)
    session.add(certificate)
    session.execute(_REQUEST_NUMBER, {"app": request.application_id, "number": number})
    show_written(session, IssueRequest, request.application_id, {"certificate_number": number})
    audit.record(session, SYSTEM, "certificate.number_reserved", "certificate", number,
                 {"application_id": data.application_id, "kind": data.kind.value,
                  "supersedes": certificate.supersedes, "photo_missing": photo_missing})
    return certificate


def find_for_application(session: Session, application_id: str) -> Certificate | None:
    return session.execute(_FOR_APPLICATION, {"app": application_id}).scalar_one_or_none()


# ---- step 3: issued, announced, and the previous certificate superseded ------------------------

def _hash_fields(certificate: Certificate, hash_key: bytes) -> dict:
    return {"id_number_hash": tokens.id_hash(hash_key, certificate.id_number),
            "id_number_hash_key_id": tokens.id_hash_key_id(hash_key)}


def _status_event(cls, certificate: Certificate, hash_key: bytes, reason: str | None, by: str, at: dt.datetime,
                  **extra):
    return cls(certificate_number=certificate.certificate_number, person_id=certificate.person_id,
               holder_name_masked=idcard.mask_name(certificate.holder_name),
               id_number_masked=idcard.mask(certificate.id_number), level=certificate.level,
               region_code=certificate.region_code, reason=reason, changed_by=by, changed_at=at,
               status=certificate.status, valid_until=certificate.valid_until,
               **_hash_fields(certificate, hash_key), **extra)


def finish(session: Session, number: str, sha256: str, signer_fingerprint: str, hash_key: bytes,
           now: dt.datetime, certificate: Certificate | None = None) -> Certificate | None:
    """Step 3 (one transaction): issuing → issued, certificate_issued in the outbox, the request done,
    and the certificate this one replaces superseded. None if another worker finished it first.
    ``certificate``: the reserved row as read before (what the event says does not change after
    the reservation), which spares reading it again."""
    moved = session.execute(_ISSUED, {"number": number, "digest": sha256, "now": now,
                                      "signer": signer_fingerprint}).rowcount
    if moved != 1:
        return None
    if certificate is None:
        certificate = session.get(Certificate, number, populate_existing=True)
    else:   # what the compare-and-set wrote, so the object tells the truth without a read
        for name, value in (("status", ISSUED), ("sha256", sha256), ("issued_at", now),
                            ("signer_fingerprint", signer_fingerprint), ("status_changed_at", now),
                            ("status_changed_by", SYSTEM)):
            set_committed_value(certificate, name, value)
    audit.record(session, SYSTEM, "certificate.issued", "certificate", number,
                 {"sha256": sha256, "signer": signer_fingerprint, "application_id": certificate.application_id})
    outbox.add(session, CertificateIssued(
        certificate_number=number, application_id=certificate.application_id, person_id=certificate.person_id,
        holder_name_masked=idcard.mask_name(certificate.holder_name),
        id_number_masked=idcard.mask(certificate.id_number), level=certificate.level,
        authority=certificate.authority, region_code=certificate.region_code,
        valid_from=certificate.valid_from, valid_until=certificate.valid_until,
        issued_at=now.replace(tzinfo=dt.UTC), sha256=sha256, kind=certificate.kind,
        issued_on=certificate.issued_on, supersedes=certificate.supersedes,
        original_certificate_no=certificate.original_certificate_no, **_hash_fields(certificate, hash_key)))
    if certificate.supersedes:
        _supersede(session, certificate, hash_key, now)
    session.execute(_REQUEST_DONE, {"app": certificate.application_id, "number": number, "now": now})
    show_written(session, IssueRequest, certificate.application_id,
                 {"status": DONE, "certificate_number": number, "last_error_code": None, "last_error_field": None,
                  "last_error": None, "updated_at": now})
    return certificate


def _supersede(session: Session, new: Certificate, hash_key: bytes, now: dt.datetime) -> None:
    reason = {ApplicationKind.UPGRADE.value: f"职业水平升级为{new.level}，换发新证书",
              ApplicationKind.RE_REGISTRATION.value: "再登记，换发新证书"}.get(new.kind, "换发新证书")
    moved = session.execute(
        update(Certificate)
        .where(Certificate.certificate_number == new.supersedes,
               Certificate.status.in_((ISSUED, SUSPENDED, EXPIRED)))
        .values(status=SUPERSEDED, superseded_by=new.certificate_number, pending_upgrade_level=None,
                status_reason=reason, status_changed_at=now, status_changed_by=SYSTEM)).rowcount
    if moved != 1:
        return  # revoked meanwhile: it stays revoked
    old = session.get(Certificate, new.supersedes, populate_existing=True)
    changed = status_lists.sync(session, old, now)
    audit.record(session, SYSTEM, "certificate.superseded", "certificate", old.certificate_number,
                 {"by": new.certificate_number, "reason": reason, "status_lists": changed})
    outbox.add(session, _status_event(CertificateReissued, old, hash_key, reason, SYSTEM,
                                      now.replace(tzinfo=dt.UTC),
                                      new_certificate_number=new.certificate_number))


# ---- lifecycle by officers ----------------------------------------------------------------------

ACTIONS = {
    # action: (from statuses, to status, event, audit action)
    "revoke": ((ISSUED, SUSPENDED), REVOKED, CertificateRevoked, "certificate.revoked"),
    "suspend": ((ISSUED,), SUSPENDED, CertificateSuspended, "certificate.suspended"),
    "reinstate": ((SUSPENDED,), ISSUED, CertificateReinstated, "certificate.reinstated"),
}
_STATE_WORDS = {ISSUED: "有效", SUSPENDED: "已暂停", REVOKED: "已撤销", EXPIRED: "已过期", SUPERSEDED: "已换发"}


def authorise_officer(caller: Caller, certificate: Certificate | None) -> None:
    """Officers whose jurisdiction covers the certificate's registration region, and admins."""
    if caller.role == ADMIN:
        return
    if caller.role != OFFICER:
        raise errors.SwmsError(errors.FORBIDDEN, "只有民政部门审核人员可以撤销、暂停或恢复证书", "auth_token")
    if certificate is not None and not caller.covers_region(certificate.region_code):
        raise errors.SwmsError(errors.FORBIDDEN, "无权处理其他地区登记的证书", "certificate_number")


def change_status(session: Session, certificate: Certificate, action: str, caller: Caller, reason: str,
                  hash_key: bytes, today: dt.date, now: dt.datetime) -> Certificate:
    sources, target, event_cls, audit_action = ACTIONS[action]
    if certificate.status not in sources:
        word = _STATE_WORDS.get(certificate.status, certificate.status)
        raise errors.SwmsError(errors.INVALID_STATE, f"证书当前状态为“{word}”，不能执行此操作", "certificate_number")
    if action == "reinstate" and certificate.valid_until < today:
        raise errors.SwmsError(errors.INVALID_STATE, "证书已过有效期，不能恢复", "certificate_number")
    moved = session.execute(
        update(Certificate).where(Certificate.certificate_number == certificate.certificate_number,
                                  Certificate.status == certificate.status)
        .values(status=target, status_reason=reason, status_changed_at=now,
                status_changed_by=caller.subject)).rowcount
    if moved != 1:  # changed by someone else between the read and this write
        raise errors.SwmsError(errors.INVALID_STATE, "证书状态刚被他人修改，请刷新后重试", "certificate_number")
    certificate = session.get(Certificate, certificate.certificate_number, populate_existing=True)
    changed = status_lists.sync(session, certificate, now)   # the published lists move in this transaction
    audit.record(session, caller.subject, audit_action, "certificate", certificate.certificate_number,
                 {"reason": reason, "role": caller.role, "region": caller.region_code, "status_lists": changed})
    outbox.add(session, _status_event(event_cls, certificate, hash_key, reason, caller.subject,
                                      now.replace(tzinfo=dt.UTC)))
    return certificate


def expire_due(session: Session, today: dt.date, now: dt.datetime, hash_key: bytes, limit: int = 500) -> list[str]:
    """Current or suspended certificates whose validity ended: expired, with certificate_expired."""
    due = list(session.execute(
        select(Certificate.certificate_number)
        .where(Certificate.status.in_(HELD), Certificate.valid_until < today)
        .order_by(Certificate.valid_until).limit(limit)).scalars())
    expired = []
    for number in due:
        moved = session.execute(
            update(Certificate).where(Certificate.certificate_number == number, Certificate.status.in_(HELD),
                                      Certificate.valid_until < today)
            .values(status=EXPIRED, status_reason="登记有效期届满", status_changed_at=now,
                    status_changed_by=SYSTEM)).rowcount
        if moved != 1:
            continue
        certificate = session.get(Certificate, number, populate_existing=True)
        audit.record(session, SYSTEM, "certificate.expired", "certificate", number,
                     {"valid_until": certificate.valid_until.isoformat()})
        outbox.add(session, _status_event(CertificateExpired, certificate, hash_key, "登记有效期届满", SYSTEM,
                                          now.replace(tzinfo=dt.UTC)))
        expired.append(number)
    # A suspension ends with the validity. The lists last, in list order: a lifecycle change locks its
    # certificate, then its list; taking lists only after every certificate here cannot deadlock with it.
    for certificate in sorted((session.get(Certificate, number) for number in expired),
                              key=lambda found: found.status_list or 0):
        status_lists.sync(session, certificate, now)
    return expired


# ---- 已出证待升级 --------------------------------------------------------------------------------

def mark_pending_upgrade(session: Session, event: PasserLevelRaised) -> list[str]:
    """The holder passed a higher level: their current certificate waits for an upgrade re-issue."""
    marked = []
    for certificate in held_certificates(session, event.person_id):
        if LEVEL_RANK[event.new_level.value] <= LEVEL_RANK[certificate.level]:
            continue
        certificate.pending_upgrade_level = event.new_level.value
        audit.record(session, "identity", "certificate.pending_upgrade", "certificate",
                     certificate.certificate_number,
                     {"from": certificate.level, "to": event.new_level.value, "event_id": event.event_id})
        marked.append(certificate.certificate_number)
    if not marked:
        audit.record(session, "identity", "certificate.pending_upgrade_ignored", "person", event.person_id,
                     {"to": event.new_level.value, "event_id": event.event_id, "why": "no current certificate below"})
    return marked


# ---- public verification ------------------------------------------------------------------------

def verification_status(certificate: Certificate, today: dt.date) -> VerificationStatus:
    if certificate.status == REVOKED:
        return VerificationStatus.REVOKED
    if certificate.status == SUPERSEDED:
        return VerificationStatus.SUPERSEDED
    if certificate.status == EXPIRED or certificate.valid_until < today:
        return VerificationStatus.EXPIRED  # also before the expiry timer has run
    if certificate.status == SUSPENDED:
        return VerificationStatus.SUSPENDED
    return VerificationStatus.CURRENT


# One answer for "no such number", "not issued yet" and "number and name do not belong together",
# so that a caller learns nothing from a wrong pair (not even that the number exists).
NOT_FOUND_BY_NUMBER = "查无此证书：请核对证书编号与持证人姓名"
NOT_FOUND_BY_TOKEN = "查无此证书：证书编号不存在或证书尚未签发"


def name_digest(name: str) -> bytes:
    """A fixed-length digest of the name's key (full-width/half-width, spaces and middle dots as
    identity compares them), so comparing two takes the same time whatever they hold."""
    return hashlib.sha256(name_key(name).encode("utf-8")).digest()


_NO_NAME = name_digest("\x00")   # what an unknown number's name is compared with (same work either way)


def verify(session: Session, number: str, holder_name: str | None, today: dt.date,
           now: dt.datetime) -> VerificationResult:
    """``holder_name`` None: the number came from a signed QR token. Otherwise the certificate
    answers only if the name is its holder's; the comparison is constant-time, whole-name only."""
    certificate = session.get(Certificate, number)
    if certificate is not None and certificate.status == ISSUING:
        certificate = None
    if holder_name is not None:
        expected = name_digest(certificate.holder_name) if certificate is not None else _NO_NAME
        if not hmac.compare_digest(name_digest(holder_name), expected) or certificate is None:
            raise errors.SwmsError(errors.NOT_FOUND, NOT_FOUND_BY_NUMBER, "certificate_number")
    elif certificate is None:
        raise errors.SwmsError(errors.NOT_FOUND, NOT_FOUND_BY_TOKEN, "token")
    status = verification_status(certificate, today)
    reason = certificate.status_reason if status in (VerificationStatus.REVOKED, VerificationStatus.SUSPENDED,
                                                     VerificationStatus.SUPERSEDED) else None
    return VerificationResult(
        genuine=True, status=status, status_label=STATUS_LABELS[status], reason=reason,
        certificate_number=certificate.certificate_number,
        holder_name_masked=idcard.mask_name(certificate.holder_name), level=certificate.level,
        authority=certificate.authority, valid_from=certificate.valid_from, valid_until=certificate.valid_until,
        issued_on=certificate.issued_on or certificate.valid_from,
        superseded_by=certificate.superseded_by if status == VerificationStatus.SUPERSEDED else None,
        checked_at=now.replace(tzinfo=dt.UTC))
