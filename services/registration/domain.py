"""Registration rules in plain Python: submission, the status machine, and review outcomes."""
from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.registration.models import Application, StatusChange, audit, outbox
from swms import errors
from swms.contracts.common import ApplicationKind
from swms.contracts.common import ApplicationStatus as S
from swms.contracts.events import (
    ApplicationApproved,
    ApplicationRejected,
    ApplicationSubmitted,
    CertificateIssued,
)
from swms.contracts.profile import ProfileSnapshot
from swms.outbox import utcnow

# Allowed moves of a first registration (《社会工作者首次登记信息表》), from domain.md §3.1.
# 初审中 → 已出证 serves provinces whose chain has a single review level.
FIRST_REGISTRATION_TRANSITIONS = {
    S.INITIAL_REVIEW: {S.INITIAL_REJECTED, S.FINAL_REVIEW, S.ISSUED},
    S.INITIAL_REJECTED: {S.INITIAL_REVIEW},
    S.FINAL_REVIEW: {S.FINAL_REJECTED, S.ISSUED},
    S.FINAL_REJECTED: {S.INITIAL_REVIEW},
    S.ISSUED: {S.ISSUED_PENDING_UPGRADE},
    S.ISSUED_PENDING_UPGRADE: {S.ISSUED},
}
RESUBMITTABLE = {S.INITIAL_REJECTED, S.FINAL_REJECTED}


def move(session: Session, application: Application, new_status: S, actor: str,
         reason: str | None = None) -> None:
    current = S(application.status)
    if new_status not in FIRST_REGISTRATION_TRANSITIONS.get(current, set()):
        raise errors.SwmsError(errors.INVALID_STATE, f"当前状态“{current.value}”不能变为“{new_status.value}”",
                               "status")
    now = utcnow()
    application.status = new_status.value
    application.updated_at = now
    # Through the relationship, so an application already loaded shows its new history at once.
    application.history.append(StatusChange(application_id=application.application_id, status=new_status.value,
                                            at=now, actor=actor, reason=reason))
    audit.record(session, actor, "application.status_changed", "application", application.application_id,
                 {"from": current.value, "to": new_status.value, "reason": reason})


def check_exam_window(exam_year: int, window_years: int, today: dt.date) -> None:
    """首次登记 within ``window_years`` of the exam: open until 31 December of exam_year + window."""
    if today > dt.date(exam_year + window_years, 12, 31):
        raise errors.SwmsError(
            "FIRST_REGISTRATION_WINDOW_CLOSED",
            f"首次登记须在考试通过后{window_years}年内申请（您的考试年度为{exam_year}年），请咨询当地民政部门",
            "exam_year")


def submit_first_registration(session: Session, snapshot: ProfileSnapshot, actor: str,
                              applicant_name_masked: str) -> Application:
    existing = session.execute(
        select(Application).where(Application.person_id == snapshot.person_id,
                                  Application.kind == ApplicationKind.FIRST_REGISTRATION.value)
        .with_for_update()
    ).scalar_one_or_none()
    now = utcnow()
    if existing is not None and S(existing.status) not in RESUBMITTABLE:
        raise errors.SwmsError(errors.APPLICATION_ALREADY_OPEN,
                               f"您已有首次登记申请（状态：{existing.status}），不能重复提交", "kind")
    if existing is None:
        application = Application(application_id=str(uuid.uuid4()), person_id=snapshot.person_id,
                                  kind=ApplicationKind.FIRST_REGISTRATION.value, status=S.INITIAL_REVIEW.value,
                                  region_code=snapshot.region_code, snapshot=snapshot.model_dump_json(),
                                  committed_at=now, submitted_at=now, updated_at=now)
        session.add(application)
        session.flush()
        application.history.append(StatusChange(application_id=application.application_id,
                                                status=S.INITIAL_REVIEW.value, at=now, actor=actor))
        audit.record(session, actor, "application.submitted", "application", application.application_id)
        resubmission = False
    else:  # corrected after a rejection: a fresh snapshot goes back to initial review
        application = existing
        application.snapshot = snapshot.model_dump_json()
        application.region_code = snapshot.region_code
        application.committed_at = application.submitted_at = now
        application.rejection_reason = None
        move(session, application, S.INITIAL_REVIEW, actor, "resubmitted")
        resubmission = True
    outbox.add(session, ApplicationSubmitted(
        application_id=application.application_id, person_id=application.person_id,
        kind=ApplicationKind(application.kind), region_code=application.region_code,
        applicant_name_masked=applicant_name_masked, submitted_at=now, resubmission=resubmission))
    return application


def _application(session: Session, application_id: str) -> Application:
    application = session.get(Application, application_id)
    if application is None:
        raise errors.not_found("申请", "application_id")
    return application


def apply_approval(session: Session, event: ApplicationApproved) -> None:
    application = _application(session, event.application_id)
    if event.final:
        # Approved at the last level: the status becomes 已出证 when the certificate is issued.
        audit.record(session, event.decided_by, "application.final_approved", "application",
                     application.application_id, {"stage": event.stage.value})
    elif S(application.status) == S.INITIAL_REVIEW:
        move(session, application, S.FINAL_REVIEW, event.decided_by)


def apply_rejection(session: Session, event: ApplicationRejected) -> None:
    application = _application(session, event.application_id)
    target = S.INITIAL_REJECTED if S(application.status) == S.INITIAL_REVIEW else S.FINAL_REJECTED
    application.rejection_reason = event.reason
    move(session, application, target, event.decided_by, event.reason)


def apply_issue(session: Session, event: CertificateIssued) -> None:
    application = _application(session, event.application_id)
    application.certificate_number = event.certificate_number
    move(session, application, S.ISSUED, "certificate")
