"""再登记: who may register again (a current, usable certificate, within the window before it
ends), and its form: the continuing-education hours of the registration period, online records
(imported) plus offline courses with their proofs."""
from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from services.registration.common import Standing, _form, _lapsed_error, _refuse_unusable, _release_proofs
from services.registration.models import (
    PROOF_VERIFIED, Application, CeRecord, HeldCertificate, ProofFileRow, audit,
)
from services.registration.policy import ProvincePolicy
from swms import errors
from swms.contracts.profile import ProfileSnapshot
from swms.contracts.registration import ContinuingEducation, OfflineCourse, OnlineRecord
from swms.db import show_written
from swms.outbox import utcnow


def check_eligible(state: Standing, policy: ProvincePolicy, today: dt.date, submitting: bool) -> None:
    """``submitting`` adds the window: a re-registration form may be prepared before it opens."""
    certificate = state.certificate
    if certificate is None:
        raise errors.SwmsError(errors.NOT_REGISTERED, "您尚未取得登记证书，不能申请再登记；请先申请首次登记",
                               "certificate")
    _refuse_unusable(certificate)
    if state.lapsed:
        raise _lapsed_error(certificate)
    if submitting and today < state.opens_on:
        raise errors.SwmsError(errors.RE_REGISTRATION_NOT_OPEN,
            f"再登记须在登记有效期届满前{policy.re_registration_window_months}个月内申请：您的证书有效期至"
            f"{certificate.valid_until.isoformat()}，可于{state.opens_on.isoformat()}起提交（现在可以先保存草稿）",
            "certificate")


# ---- continuing education ---------------------------------------------------------------------

def _tenths(hours: float) -> int:
    return int(round(hours * 10))


_ONLINE_RECORDS = (   # built once (see common: building costs more than running it)
    select(CeRecord).where(or_(CeRecord.person_id == bindparam("person_id"),
                               CeRecord.id_number == bindparam("id_number")),
                           CeRecord.withdrawn.is_(False), CeRecord.completed_on >= bindparam("period_from"),
                           CeRecord.completed_on <= bindparam("period_until"))
    .order_by(CeRecord.completed_on, CeRecord.id))


def online_records(session: Session, person_id: str, id_number: str, period_from: dt.date,
                   period_until: dt.date) -> list[CeRecord]:
    return list(session.execute(_ONLINE_RECORDS, {"person_id": person_id, "id_number": id_number,
                                                  "period_from": period_from,
                                                  "period_until": period_until}).scalars())


_PROOF = select(ProofFileRow).where(ProofFileRow.proof_key == bindparam("proof_key"))   # built once (as session.get is not)
_PROOFS_NAMED = select(ProofFileRow).where(ProofFileRow.proof_key.in_(bindparam("keys", expanding=True)))


def proofs_named(session: Session, keys: list[str]) -> dict[str, ProofFileRow]:
    """The proofs several forms name, in one statement (a group of submissions)."""
    return {row.proof_key: row for row in session.execute(_PROOFS_NAMED, {"keys": sorted(set(keys))}).scalars()
            } if keys else {}


def check_courses(session: Session, courses: list[OfflineCourse], person_id: str, application_id: str | None,
                  certificate: HeldCertificate, today: dt.date, proofs: dict[str, ProofFileRow] | None = None) -> None:
    """``proofs``: the proofs the courses name, when already read (:func:`proofs_named`)."""
    for index, course in enumerate(courses):
        where = f"offline_courses.{index}"
        if course.end_date > today:
            raise errors.SwmsError(errors.CE_COURSE_NOT_FINISHED,
                                   f"第{index + 1}门线下课程的结束日期（{course.end_date.isoformat()}）晚于今天，"
                                   "课程结束后才能计入学时", f"{where}.end_date")
        if course.start_date < certificate.valid_from or course.end_date > certificate.valid_until:
            raise errors.SwmsError(errors.CE_COURSE_OUTSIDE_PERIOD,
                f"第{index + 1}门线下课程不在本登记期内：只计{certificate.valid_from.isoformat()}至"
                f"{certificate.valid_until.isoformat()}之间完成的继续教育", f"{where}.start_date")
        proof = (proofs.get(course.proof_key) if proofs is not None
                 else session.execute(_PROOF, {"proof_key": course.proof_key}).scalar_one_or_none())
        if proof is None or proof.person_id != person_id or proof.status != PROOF_VERIFIED:
            raise errors.SwmsError(errors.PROOF_NOT_FOUND,
                                   f"第{index + 1}门线下课程的证明材料不存在或未上传完成，请上传后再保存",
                                   f"{where}.proof_key")
        if proof.submitted and proof.application_id not in (None, application_id):
            raise errors.SwmsError(errors.PROOF_ALREADY_USED,
                                   f"第{index + 1}门线下课程的证明材料已用于另一份申请，请上传本课程的证明材料",
                                   f"{where}.proof_key")


_RECORDS_OF = (   # online_records of several people, without the period (each has its own)
    select(CeRecord).where(or_(CeRecord.person_id.in_(bindparam("person_ids", expanding=True)),
                               CeRecord.id_number.in_(bindparam("id_numbers", expanding=True))),
                           CeRecord.withdrawn.is_(False))
    .order_by(CeRecord.completed_on, CeRecord.id))


def online_records_of(session: Session, snapshots: list[ProfileSnapshot]) -> list[CeRecord]:
    """Every online record of several people, in one statement: :func:`records_in_period` picks
    each one's (as :func:`online_records` reads them)."""
    if not snapshots:
        return []
    return list(session.execute(_RECORDS_OF, {"person_ids": sorted({s.person_id for s in snapshots}),
                                              "id_numbers": sorted({s.id_number for s in snapshots})}).scalars())


def records_in_period(records: list[CeRecord], person_id: str, id_number: str, period_from: dt.date,
                      period_until: dt.date) -> list[CeRecord]:
    return [r for r in records if (r.person_id == person_id or r.id_number == id_number)
            and period_from <= r.completed_on <= period_until]


def ce_summary(session: Session, snapshot: ProfileSnapshot, certificate: HeldCertificate,
               courses: list[OfflineCourse], policy: ProvincePolicy,
               records: list[CeRecord] | None = None) -> ContinuingEducation:
    """``records``: the person's online records in the period, when already read."""
    if records is None:
        records = online_records(session, snapshot.person_id, snapshot.id_number, certificate.valid_from,
                                 certificate.valid_until)
    online = sum(record.hours_tenths for record in records)
    offline = sum(_tenths(course.hours) for course in courses)
    return ContinuingEducation(
        period_from=certificate.valid_from, period_until=certificate.valid_until,
        required_hours=policy.required_hours(certificate.level), online_hours=online / 10,
        offline_hours=offline / 10, total_hours=(online + offline) / 10,
        online_records=[OnlineRecord(source=r.source, record_id=r.record_id, course=r.course, provider=r.provider,
                                     hours=r.hours_tenths / 10, completed_on=r.completed_on) for r in records],
        offline_courses=courses)


def check_hours(summary: ContinuingEducation) -> None:
    if summary.total_hours + 1e-9 < summary.required_hours:
        short = round(summary.required_hours - summary.total_hours, 1)
        raise errors.SwmsError(errors.CE_HOURS_SHORT,
            f"继续教育学时不足：本登记期（{summary.period_from.isoformat()}至{summary.period_until.isoformat()}）"
            f"须完成{summary.required_hours:g}学时，现有线上{summary.online_hours:g}学时、线下"
            f"{summary.offline_hours:g}学时，还差{short:g}学时", "offline_courses")


_PROOFS = ProofFileRow.__table__
# Built once, on the table (not the mapped class): the ORM's bulk UPDATE path (autoflush, matching
# the session's objects) cost more than the statement; loaded rows are brought up to date below.
_ATTACH_PROOFS = (update(_PROOFS).where(_PROOFS.c.proof_key.in_(bindparam("keys", expanding=True)))
                  .values(application_id=bindparam("application_id"), released_at=None))


def _attach_proofs(session: Session, application_id: str, courses: list[OfflineCourse]) -> None:
    """A saved form's proofs belong to its application; proofs it dropped are released (a
    submitted form's: :func:`attach_submitted_proofs`)."""
    keys = {course.proof_key for course in courses}
    if keys:
        session.execute(_ATTACH_PROOFS, {"keys": sorted(keys), "application_id": application_id})
        for key in keys:    # the rows this session holds (check_courses read them) show the update
            show_written(session, ProofFileRow, key, {"application_id": application_id, "released_at": None})
    _release_proofs(session, application_id, keep=keys)


_SUBMIT_PROOF = (update(_PROOFS).where(_PROOFS.c.proof_key == bindparam("key"))   # one row each (executemany)
                 .values(application_id=bindparam("application_id"), released_at=None, submitted=True))


def attach_submitted_proofs(session: Session, forms: list[tuple[str, list[OfflineCourse], bool]]) -> None:
    """:func:`_attach_proofs` of several submitted forms (application id, courses, new): the proofs
    marked in one statement; a form that was saved before releases the proofs it dropped."""
    rows = sorted({(course.proof_key, application_id) for application_id, courses, _ in forms for course in courses})
    if rows:
        session.execute(_SUBMIT_PROOF, [{"key": key, "application_id": application_id} for key, application_id in rows])
        for key, application_id in rows:    # the rows this session holds (read by the checks) show the update
            show_written(session, ProofFileRow, key,
                         {"application_id": application_id, "released_at": None, "submitted": True})
    for application_id, courses, new in forms:
        if not new:
            _release_proofs(session, application_id, keep={course.proof_key for course in courses})


def stored_courses(application: Application) -> list[OfflineCourse]:
    ce = _form(application).get("continuing_education") or {}
    return [OfflineCourse.model_validate(course) for course in ce.get("offline_courses", [])]


def save_form(session: Session, application: Application, courses: list[OfflineCourse] | None,
              certificate: HeldCertificate, snapshot: ProfileSnapshot, policy: ProvincePolicy, today: dt.date,
              actor: str) -> Application:
    """The applicant's part of a draft; ``courses`` None: keep the saved ones (a save names only
    what it changes)."""
    if courses is None:
        courses = stored_courses(application)
    check_courses(session, courses, snapshot.person_id, application.application_id, certificate, today)
    summary = ce_summary(session, snapshot, certificate, courses, policy)
    application.form = json.dumps({"continuing_education": summary.model_dump(mode="json")}, ensure_ascii=False)
    application.previous_certificate_number = certificate.certificate_number
    application.updated_at = utcnow()
    _attach_proofs(session, application.application_id, courses)
    audit.record(session, actor, "application.form_saved", "application", application.application_id,
                 {"offline_courses": len(courses), "proofs": sorted(c.proof_key for c in courses)})
    return application


# ---- continuing-education records -------------------------------------------------------------

def record_ce(session: Session, *, source: str, record_id: str, course: str, provider: str, hours: float,
              completed_on: dt.date, person_id: str | None = None, id_number: str | None = None,
              withdrawn: bool = False, actor: str, source_time: dt.datetime | None = None) -> str:
    """Add or correct one record (keyed by source + record_id): 'added', 'updated', 'unchanged', or
    'stale' (a version older than the one stored, arriving late)."""
    if source_time is None:
        source_time = utcnow()
    elif source_time.tzinfo is not None:
        source_time = source_time.astimezone(dt.timezone.utc).replace(tzinfo=None)
    row = session.execute(select(CeRecord).where(CeRecord.source == source, CeRecord.record_id == record_id)
                          .with_for_update()).scalar_one_or_none()
    values = dict(course=course, provider=provider, hours_tenths=_tenths(hours), completed_on=completed_on,
                  withdrawn=withdrawn)
    if row is None:
        session.add(CeRecord(source=source, record_id=record_id, person_id=person_id, id_number=id_number,
                             recorded_at=utcnow(), source_time=source_time, **values))
        outcome = "added"
    else:
        if row.source_time is not None and source_time < row.source_time:
            audit.record(session, actor, "ce_record.stale", "ce_record", f"{source}:{record_id}"[:64],
                         {"hours": hours, "source_time": source_time.isoformat()})
            return "stale"
        row.source_time = source_time
        changed = {k: v for k, v in values.items() if getattr(row, k) != v}
        if person_id and row.person_id != person_id:
            changed["person_id"] = person_id
        if id_number and row.id_number != id_number:
            changed["id_number"] = id_number
        if not changed:
            return "unchanged"
        for name, value in changed.items():
            setattr(row, name, value)
        row.recorded_at = utcnow()
        outcome = "updated"
    audit.record(session, actor, f"ce_record.{outcome}", "ce_record", f"{source}:{record_id}"[:64],
                 {"hours": hours, "completed_on": completed_on.isoformat(), "withdrawn": withdrawn})
    return outcome
