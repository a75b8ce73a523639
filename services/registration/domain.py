"""Registration rules in plain Python over a SQLAlchemy session: drafts, the three forms and
upgrade, eligibility and windows, continuing education, the status machines, and what review and
certificate events do to an application. The service gathers what other services know (the
profile) before the transaction and passes it in; nothing here talks to the network."""
from __future__ import annotations

import calendar
import datetime as dt
import json
import uuid
from dataclasses import dataclass

from sqlalchemy import func, or_, select, true, update
from sqlalchemy.orm import Session

from services.registration.models import (
    EXPIRED,
    PROOF_VERIFIED,
    REVOKED,
    SUPERSEDED,
    SUSPENDED,
    VALID,
    Application,
    CeRecord,
    HeldCertificate,
    LevelRaise,
    ProfileCopy,
    ProofFileRow,
    StatusChange,
    Submission,
    audit,
    outbox,
)
from services.registration.policy import ProvincePolicy
from swms import errors, idcard
from swms.contracts.common import ApplicationKind as K
from swms.contracts.common import ApplicationStatus as S
from swms.contracts.common import Level
from swms.contracts.events import (
    ApplicationApproved,
    ApplicationRejected,
    ApplicationReturned,
    ApplicationSubmitted,
    CertificateIssued,
    CertificateReissued,
    FilesHeld,
    PasserLevelRaised,
)
from swms.contracts.profile import CompletenessResponse, ProfileSnapshot
from swms.contracts.registration import (
    ContinuingEducation,
    FormView,
    IssuanceData,
    OfflineCourse,
    OnlineRecord,
    RegistrationStanding,
    ReplacementDetails,
)
from swms.contracts.registration import HeldCertificate as HeldCertificateOut
from swms.outbox import utcnow

KIND_NAMES = {K.FIRST_REGISTRATION: "首次登记", K.RE_REGISTRATION: "再登记", K.REPLACEMENT: "更换电子证",
              K.UPGRADE: "升级换证"}
LEVEL_RANK = {Level.ASSISTANT.value: 1, Level.SOCIAL_WORKER.value: 2, Level.SENIOR.value: 3}

# ---- status machines (domain.md §3) -----------------------------------------------------------
# 首次登记, 再登记 and upgrade. 未登记 is an unsubmitted form (draft). 初审中 → 已出证 serves
# provinces whose chain has a single review level.
FIRST_REGISTRATION_TRANSITIONS = {
    S.NOT_REGISTERED: {S.INITIAL_REVIEW},
    S.INITIAL_REVIEW: {S.INITIAL_REJECTED, S.FINAL_REVIEW, S.ISSUED},
    S.INITIAL_REJECTED: {S.INITIAL_REVIEW},
    S.FINAL_REVIEW: {S.FINAL_REJECTED, S.ISSUED},
    S.FINAL_REJECTED: {S.INITIAL_REVIEW},
    S.ISSUED: {S.ISSUED_PENDING_UPGRADE},
    S.ISSUED_PENDING_UPGRADE: {S.ISSUED},
}
# 更换电子证: reviewed by the county only: 初审中 → 审核不通过 / 已出证.
REPLACEMENT_TRANSITIONS = {
    S.NOT_REGISTERED: {S.INITIAL_REVIEW},
    S.INITIAL_REVIEW: {S.REJECTED, S.ISSUED},
    S.REJECTED: {S.INITIAL_REVIEW},
    S.ISSUED: {S.ISSUED_PENDING_UPGRADE},
    S.ISSUED_PENDING_UPGRADE: {S.ISSUED},
}
TRANSITIONS = {K.FIRST_REGISTRATION: FIRST_REGISTRATION_TRANSITIONS, K.RE_REGISTRATION: FIRST_REGISTRATION_TRANSITIONS,
               K.UPGRADE: FIRST_REGISTRATION_TRANSITIONS, K.REPLACEMENT: REPLACEMENT_TRANSITIONS}
REJECTED_STATES = {S.INITIAL_REJECTED, S.FINAL_REJECTED, S.REJECTED}
# The applicant may change the form only while it is a draft or after a rejection (with the
# reason in hand): never while a reviewer has it, never after the initial review passed.
EDITABLE = {S.NOT_REGISTERED} | REJECTED_STATES
IN_REVIEW = {S.INITIAL_REVIEW, S.FINAL_REVIEW}
CLOSED = {S.ISSUED, S.ISSUED_PENDING_UPGRADE}


def move(session: Session, application: Application, new_status: S, actor: str,
         reason: str | None = None) -> None:
    current = S(application.status)
    if new_status not in TRANSITIONS[K(application.kind)].get(current, set()):
        raise errors.SwmsError(errors.INVALID_STATE, f"当前状态“{current.value}”不能变为“{new_status.value}”",
                               "status")
    now = utcnow()
    application.status = new_status.value
    application.updated_at = now
    if new_status in CLOSED:
        application.open_person_id = None
    # Through the relationship, so an application already loaded shows its new history at once.
    application.history.append(StatusChange(application_id=application.application_id, status=new_status.value,
                                            at=now, actor=actor, reason=reason))
    audit.record(session, actor, "application.status_changed", "application", application.application_id,
                 {"from": current.value, "to": new_status.value, "reason": reason})


# ---- dates ------------------------------------------------------------------------------------

def add_months(day: dt.date, months: int) -> dt.date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def add_years(day: dt.date, years: int) -> dt.date:
    return add_months(day, 12 * years)


def years_after(moment: dt.datetime, years: int) -> dt.datetime:
    return dt.datetime.combine(add_years(moment.date(), years), moment.time())


def check_exam_window(exam_year: int, window_years: int, today: dt.date) -> None:
    """首次登记 within ``window_years`` of the exam: open until 31 December of exam_year + window."""
    if today > dt.date(exam_year + window_years, 12, 31):
        raise errors.SwmsError(
            errors.FIRST_REGISTRATION_WINDOW_CLOSED,
            f"首次登记须在考试通过后{window_years}年内申请（您的考试年度为{exam_year}年，受理截止"
            f"{exam_year + window_years}年12月31日），已超过期限，请咨询登记所在地民政部门",
            "exam_year")


# ---- what the person holds --------------------------------------------------------------------

@dataclass
class Standing:
    certificate: HeldCertificate | None
    lapsed: bool
    opens_on: dt.date | None
    pending_raise: LevelRaise | None
    ever_held: bool


def current_certificate(session: Session, person_id: str) -> HeldCertificate | None:
    return session.execute(
        select(HeldCertificate).where(HeldCertificate.person_id == person_id,
                                      HeldCertificate.status != SUPERSEDED)
        .order_by(HeldCertificate.valid_until.desc(), HeldCertificate.issued_at.desc()).limit(1)
    ).scalar_one_or_none()


def standing(session: Session, person_id: str, policy: ProvincePolicy, today: dt.date,
             raises: bool = True) -> Standing:
    """What the person holds; ``raises`` False skips the level-raise lookup (kinds that ignore it)."""
    certificate = current_certificate(session, person_id)
    raise_ = session.get(LevelRaise, person_id) if raises else None
    if raise_ is not None and raise_.resolved_at is not None:
        raise_ = None
    lapsed = certificate is not None and (certificate.status == EXPIRED or certificate.valid_until < today)
    opens_on = (add_months(certificate.valid_until, -policy.re_registration_window_months)
                if certificate is not None else None)
    # Superseded certificates only matter when there is no current one (rare): count them then.
    ever = certificate is not None or session.execute(
        select(func.count()).select_from(HeldCertificate).where(HeldCertificate.person_id == person_id)
    ).scalar_one() > 0
    return Standing(certificate, lapsed, opens_on, raise_, ever)


def _refuse_unusable(certificate: HeldCertificate) -> None:
    if certificate.status == REVOKED:
        raise errors.SwmsError(errors.CERTIFICATE_REVOKED, f"您的登记证书（{certificate.certificate_number}）已被撤销，"
                               "不能办理此项申请，请咨询登记所在地民政部门", "certificate")
    if certificate.status == SUSPENDED:
        raise errors.SwmsError(errors.CERTIFICATE_SUSPENDED, f"您的登记证书（{certificate.certificate_number}）已被暂停，"
                               "暂停期间不能办理此项申请，请咨询登记所在地民政部门", "certificate")


def _lapsed_error(certificate: HeldCertificate) -> errors.SwmsError:
    return errors.SwmsError(errors.REGISTRATION_LAPSED,
        f"您的登记证书（{certificate.certificate_number}）有效期已于{certificate.valid_until.isoformat()}届满，"
        "届满前未办理再登记，登记已失效，不能再申请再登记。请重新申请登记（提交《社会工作者首次登记信息表》，"
        "登记失效人员不受考试年度期限限制），如有疑问请咨询登记所在地民政部门。", "certificate")


def check_eligible(kind: K, state: Standing, snapshot: ProfileSnapshot, policy: ProvincePolicy,
                   today: dt.date, submitting: bool) -> None:
    """Whether the person may have a form of this kind; ``submitting`` adds the time windows that
    only bind the submission (a re-registration form may be prepared before its window opens)."""
    certificate = state.certificate
    if kind == K.FIRST_REGISTRATION:
        if certificate is not None and certificate.status == REVOKED:
            _refuse_unusable(certificate)
        if certificate is not None and not state.lapsed:
            raise errors.SwmsError(errors.ALREADY_HOLDS_CERTIFICATE,
                f"您已持有有效的登记证书（{certificate.certificate_number}，有效期至{certificate.valid_until.isoformat()}），"
                f"无需首次登记；有效期届满前{policy.re_registration_window_months}个月内可申请再登记", "kind")
        if certificate is None:   # a lapsed registration registers again without the exam window
            check_exam_window(snapshot.exam_year, policy.first_registration_window_years, today)
    elif kind == K.RE_REGISTRATION:
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
    elif kind == K.REPLACEMENT:
        if state.ever_held:
            raise errors.SwmsError(errors.REPLACEMENT_NOT_NEEDED,
                "您已在本系统取得电子登记证书，无需更换电子证；更换电子证仅适用于持有纸质登记证书的人员", "kind")
    elif kind == K.UPGRADE:
        if state.pending_raise is None or certificate is None:
            raise errors.SwmsError(errors.NOT_PENDING_UPGRADE,
                "您当前没有待升级的证书（已出证待升级）：职业水平等级提升后系统会自动标记，届时可申请按新等级换发证书",
                "kind")
        _refuse_unusable(certificate)
        if state.lapsed:
            raise _lapsed_error(certificate)


def effective_snapshot(kind: K, snapshot: ProfileSnapshot, state: Standing) -> ProfileSnapshot:
    """An upgrade is issued at the new level with the new management number, from the registry's
    level raise, even if the profile has not caught up yet."""
    if kind == K.UPGRADE and state.pending_raise is not None:
        return snapshot.model_copy(update={"level": Level(state.pending_raise.new_level),
                                           "management_number": state.pending_raise.management_number})
    return snapshot


# ---- the profile copy -------------------------------------------------------------------------

# Beyond this a copy is fetched again, named revision or not. Profile keeps a file it has named in
# a snapshot for its grace period (PROFILE_FILE_GRACE_HOURS, 48 h) after the file left the form: a
# submission from a copy up to this old still finds, and holds, every file the copy names.
COPY_MAX_AGE = dt.timedelta(days=1)


@dataclass
class Fetched:
    """What profile answered for a person: the snapshot and the completeness check (系统校验)."""
    snapshot: ProfileSnapshot
    completeness: CompletenessResponse
    live: bool = True          # fetched just now (False: registration's stored copy)


def store_copy(session: Session, fetched: Fetched) -> None:
    """Keep the newest copy fetched for the person (an older revision never replaces a newer one)."""
    snapshot = fetched.snapshot
    row = session.get(ProfileCopy, snapshot.person_id, with_for_update=True)
    if row is not None and row.revision > snapshot.revision:
        return
    values = dict(revision=snapshot.revision, snapshot=snapshot.model_dump_json(),
                  complete=fetched.completeness.complete, completeness=fetched.completeness.model_dump_json(),
                  fetched_at=utcnow())
    if row is None:
        session.add(ProfileCopy(person_id=snapshot.person_id, **values))
    else:
        for name, value in values.items():
            setattr(row, name, value)


def stored_copy(session: Session, person_id: str, revision: int) -> Fetched | None:
    """The stored copy if it is exactly the revision the applicant saw, and recent."""
    row = session.get(ProfileCopy, person_id)
    if row is None or row.revision != revision or utcnow() - row.fetched_at > COPY_MAX_AGE:
        return None
    return Fetched(ProfileSnapshot.model_validate_json(row.snapshot),
                   CompletenessResponse.model_validate_json(row.completeness), live=False)


def incomplete_error(completeness: CompletenessResponse) -> errors.SwmsError:
    details = [{"field": f"profile.{item.field}", "code": errors.PROFILE_INCOMPLETE, "label": item.label,
                "message": item.message} for item in completeness.items] or [
        {"field": "profile", "code": errors.PROFILE_INCOMPLETE, "label": label, "message": f"{label}未填写"}
        for label in completeness.missing]
    return errors.SwmsError(errors.PROFILE_INCOMPLETE, "请先完善个人信息表：" + "、".join(completeness.missing),
                            "profile", details)


# ---- finding the application to work on -------------------------------------------------------

def open_application(session: Session, person_id: str) -> Application | None:
    return session.execute(select(Application).where(Application.open_person_id == person_id)
                           .with_for_update()).scalar_one_or_none()


def own_application(session: Session, application_id: str, person_id: str) -> Application:
    application = session.get(Application, application_id, with_for_update=True)
    if application is None:
        raise errors.not_found("申请", "application_id")
    if application.person_id != person_id:
        raise errors.forbidden("无权查看或修改他人的申请")
    return application


def _already_open(application: Application) -> errors.SwmsError:
    return errors.SwmsError(
        errors.APPLICATION_ALREADY_OPEN,
        f"您已有一份未办结的{KIND_NAMES[K(application.kind)]}申请（状态：{application.status}），"
        "每人同时只能有一份未办结的申请；请继续办理该申请，或撤销其草稿后再申请", "kind")


def _locked(application: Application) -> errors.SwmsError:
    status = S(application.status)
    if status == S.INITIAL_REVIEW:
        message = "申请正在初审中，不能修改；初审不通过时可按退回理由修改后重新提交"
    elif status in CLOSED:
        message = f"申请已办结（状态：{status.value}），不能修改"
    else:
        message = f"申请已通过初审（状态：{status.value}），不能再修改"
    return errors.SwmsError(errors.APPLICATION_LOCKED, message, "application_id")


def workable_application(session: Session, kind: K, person_id: str, application_id: str | None,
                         for_submit: bool) -> Application | None:
    """The caller's open application of ``kind`` that may be changed now, or None (a new one)."""
    if application_id is not None:
        application = own_application(session, application_id, person_id)
        if application.kind != kind.value:
            raise errors.SwmsError(errors.INVALID_STATE,
                                   f"该申请是{KIND_NAMES[K(application.kind)]}申请，不是{KIND_NAMES[kind]}申请",
                                   "application_id")
    else:
        application = open_application(session, person_id)
        if application is not None and application.kind != kind.value:
            raise _already_open(application)
    if application is None:
        return None
    status = S(application.status)
    if status not in EDITABLE:
        if for_submit and status in IN_REVIEW:
            raise _already_open(application) if application_id is None else _locked(application)
        raise _locked(application)
    return application


# ---- drafts -----------------------------------------------------------------------------------

def _new_application(session: Session, kind: K, snapshot: ProfileSnapshot, status: S, actor: str) -> Application:
    now = utcnow()
    application = Application(
        application_id=str(uuid.uuid4()), person_id=snapshot.person_id, kind=kind.value, status=status.value,
        region_code=snapshot.region_code, snapshot=snapshot.model_dump_json(), updated_at=now, created_at=now,
        level=snapshot.level.value, snapshot_revision=snapshot.revision, profile_revision_seen=snapshot.revision,
        round=0, open_person_id=snapshot.person_id)
    session.add(application)
    application.history.append(StatusChange(application_id=application.application_id, status=status.value,
                                            at=now, actor=actor))
    return application


def _take_snapshot(application: Application, snapshot: ProfileSnapshot) -> None:
    application.snapshot = snapshot.model_dump_json()
    application.region_code = snapshot.region_code
    application.level = snapshot.level.value
    application.snapshot_revision = snapshot.revision
    application.profile_revision_seen = max(application.profile_revision_seen or 0, snapshot.revision)


def open_draft(session: Session, kind: K, snapshot: ProfileSnapshot, policy: ProvincePolicy, today: dt.date,
               actor: str) -> Application:
    state = standing(session, snapshot.person_id, policy, today)
    existing = open_application(session, snapshot.person_id)
    if existing is not None:
        if existing.kind != kind.value:
            raise _already_open(existing)
        if S(existing.status) == S.NOT_REGISTERED:
            refresh_draft(session, existing, effective_snapshot(kind, snapshot, state), actor)
        return existing
    check_eligible(kind, state, snapshot, policy, today, submitting=False)
    application = _new_application(session, kind, effective_snapshot(kind, snapshot, state), S.NOT_REGISTERED, actor)
    if state.certificate is not None and kind in (K.RE_REGISTRATION, K.UPGRADE):
        application.previous_certificate_number = state.certificate.certificate_number
    session.flush()
    audit.record(session, actor, "application.draft_created", "application", application.application_id,
                 {"kind": kind.value, "profile_revision": snapshot.revision})
    return application


def discard_draft(session: Session, application_id: str, person_id: str, actor: str) -> None:
    application = own_application(session, application_id, person_id)
    if S(application.status) != S.NOT_REGISTERED:
        raise errors.SwmsError(errors.INVALID_STATE,
                               f"只能撤销未提交的草稿；该申请状态为“{application.status}”", "application_id")
    _release_proofs(session, application.application_id, keep=set())
    for change in list(application.history):
        session.delete(change)
    session.delete(application)
    audit.record(session, actor, "application.draft_discarded", "application", application_id,
                 {"kind": application.kind})


def refresh_draft(session: Session, application: Application, snapshot: ProfileSnapshot, actor: str) -> bool:
    """A draft follows the profile (新增信息后系统自动同步); a submitted form never does."""
    if S(application.status) != S.NOT_REGISTERED or snapshot.revision < (application.snapshot_revision or 0):
        return False
    before = application.snapshot
    _take_snapshot(application, snapshot)
    if application.snapshot == before:
        return False
    application.updated_at = utcnow()
    audit.record(session, actor, "application.draft_synced", "application", application.application_id,
                 {"profile_revision": snapshot.revision})
    return True


def mark_profile_changed(session: Session, person_id: str, revision: int) -> list[str]:
    """profile_changed arrived: flag this person's drafts (refreshed next, or when next opened)."""
    drafts = session.execute(select(Application).where(Application.person_id == person_id,
                                                       Application.status == S.NOT_REGISTERED.value)).scalars().all()
    for draft in drafts:
        draft.profile_revision_seen = max(draft.profile_revision_seen or 0, revision)
    return [draft.application_id for draft in drafts]


def refresh_drafts(session: Session, snapshot: ProfileSnapshot, state: Standing | None, actor: str) -> int:
    drafts = session.execute(select(Application).where(Application.person_id == snapshot.person_id,
                                                       Application.status == S.NOT_REGISTERED.value)
                             .with_for_update()).scalars().all()
    changed = 0
    for draft in drafts:
        effective = effective_snapshot(K(draft.kind), snapshot, state) if state else snapshot
        changed += refresh_draft(session, draft, effective, actor)
    return changed


# ---- continuing education ---------------------------------------------------------------------

def _tenths(hours: float) -> int:
    return int(round(hours * 10))


def online_records(session: Session, person_id: str, id_number: str, period_from: dt.date,
                   period_until: dt.date) -> list[CeRecord]:
    return list(session.execute(
        select(CeRecord).where(or_(CeRecord.person_id == person_id, CeRecord.id_number == id_number),
                               CeRecord.withdrawn.is_(False), CeRecord.completed_on >= period_from,
                               CeRecord.completed_on <= period_until)
        .order_by(CeRecord.completed_on, CeRecord.id)).scalars())


def check_courses(session: Session, courses: list[OfflineCourse], person_id: str, application_id: str | None,
                  certificate: HeldCertificate, today: dt.date) -> None:
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
        proof = session.get(ProofFileRow, course.proof_key)
        if proof is None or proof.person_id != person_id or proof.status != PROOF_VERIFIED:
            raise errors.SwmsError(errors.PROOF_NOT_FOUND,
                                   f"第{index + 1}门线下课程的证明材料不存在或未上传完成，请上传后再保存",
                                   f"{where}.proof_key")
        if proof.submitted and proof.application_id not in (None, application_id):
            raise errors.SwmsError(errors.PROOF_ALREADY_USED,
                                   f"第{index + 1}门线下课程的证明材料已用于另一份申请，请上传本课程的证明材料",
                                   f"{where}.proof_key")


def ce_summary(session: Session, snapshot: ProfileSnapshot, certificate: HeldCertificate,
               courses: list[OfflineCourse], policy: ProvincePolicy) -> ContinuingEducation:
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


def _attach_proofs(session: Session, application_id: str, courses: list[OfflineCourse], submitted: bool = False,
                   new: bool = False) -> None:
    """The form's proofs belong to this application (for good once submitted); proofs it dropped
    are released (a new application has none to release)."""
    keys = {course.proof_key for course in courses}
    if keys:
        values = dict(application_id=application_id, released_at=None)
        if submitted:
            values["submitted"] = True
        session.execute(update(ProofFileRow).where(ProofFileRow.proof_key.in_(keys)).values(**values))
    if not new:
        _release_proofs(session, application_id, keep=keys)


def _release_proofs(session: Session, application_id: str, keep: set[str]) -> None:
    """Proofs no longer on a form, and never submitted, become orphans (deleted later)."""
    session.execute(update(ProofFileRow).where(ProofFileRow.application_id == application_id,
                                               ProofFileRow.proof_key.not_in(keep) if keep else true(),
                                               ProofFileRow.submitted.is_(False))
                    .values(application_id=None, released_at=utcnow()))


def _form(application: Application) -> dict:
    return json.loads(application.form) if application.form else {}


def stored_courses(application: Application) -> list[OfflineCourse]:
    ce = _form(application).get("continuing_education") or {}
    return [OfflineCourse.model_validate(course) for course in ce.get("offline_courses", [])]


def stored_replacement(application: Application) -> ReplacementDetails:
    return ReplacementDetails.model_validate(_form(application).get("replacement") or {})


# ---- saving the applicant's part --------------------------------------------------------------

def save_re_registration(session: Session, application: Application | None, courses: list[OfflineCourse],
                         snapshot: ProfileSnapshot, policy: ProvincePolicy, today: dt.date, actor: str) -> Application:
    state = standing(session, snapshot.person_id, policy, today)
    if application is None:
        application = open_draft(session, K.RE_REGISTRATION, snapshot, policy, today, actor)
    else:
        check_eligible(K.RE_REGISTRATION, state, snapshot, policy, today, submitting=False)
        refresh_draft(session, application, snapshot, actor)
    certificate = state.certificate
    check_courses(session, courses, snapshot.person_id, application.application_id, certificate, today)
    summary = ce_summary(session, snapshot, certificate, courses, policy)
    application.form = json.dumps({"continuing_education": summary.model_dump(mode="json")}, ensure_ascii=False)
    application.previous_certificate_number = certificate.certificate_number
    application.updated_at = utcnow()
    _attach_proofs(session, application.application_id, courses)
    audit.record(session, actor, "application.form_saved", "application", application.application_id,
                 {"offline_courses": len(courses), "proofs": sorted(c.proof_key for c in courses)})
    return application


def save_replacement(session: Session, application: Application | None, details: ReplacementDetails,
                     snapshot: ProfileSnapshot, policy: ProvincePolicy, today: dt.date, actor: str) -> Application:
    if application is None:
        application = open_draft(session, K.REPLACEMENT, snapshot, policy, today, actor)
    else:
        check_eligible(K.REPLACEMENT, standing(session, snapshot.person_id, policy, today), snapshot, policy,
                       today, submitting=False)
        refresh_draft(session, application, snapshot, actor)
    application.form = json.dumps({"replacement": details.model_dump(mode="json")}, ensure_ascii=False)
    application.original_no_key = (snapshot.region_code[:2] + details.original_certificate_no
                                   if details.original_certificate_no else None)
    application.updated_at = utcnow()
    audit.record(session, actor, "application.form_saved", "application", application.application_id,
                 {"original_certificate_no": details.original_certificate_no})
    return application


def check_replacement(session: Session, person_id: str, details: ReplacementDetails,
                      region_code: str, policy: ProvincePolicy, today: dt.date) -> None:
    required = {"original_certificate_no": "请填写原证书编号（NO）：证书第一页底部的8位数字",
                "registration_type": "请选择登记类型", "valid_from": "请填写登记有效期起",
                "valid_until": "请填写登记有效期止"}
    for field, message in required.items():
        if getattr(details, field) is None:
            raise errors.validation_error(field, message)
    if details.valid_from > today:
        raise errors.validation_error("valid_from", "登记有效期起不能晚于今天，请按纸质证书填写")
    longest = add_years(details.valid_from, policy.registration_validity_years)
    if details.valid_until > longest:
        raise errors.validation_error(
            "valid_until", f"登记有效期不能超过{policy.registration_validity_years}年，请按纸质证书核对有效期止")
    if details.valid_until < today:
        raise errors.SwmsError(errors.ORIGINAL_EXPIRED,
            f"原登记证书已于{details.valid_until.isoformat()}到期，不能更换电子证书；请咨询登记所在地民政部门重新办理登记",
            "valid_until")
    key = region_code[:2] + details.original_certificate_no
    taken = session.execute(
        select(func.count()).select_from(Application).where(
            Application.original_no_key == key, Application.person_id != person_id,
            Application.status.not_in([S.NOT_REGISTERED.value, S.REJECTED.value]))
    ).scalar_one()
    if taken:
        raise errors.SwmsError(errors.ORIGINAL_NO_IN_USE,
                               "该原证书编号（NO）已被他人用于更换电子证书，请核对；如有疑问请咨询登记所在地民政部门",
                               "original_certificate_no")


# ---- keeping the files a submitted version names (docs/operations.md, 文件保留) ------------------

RECORD_RETENTION_YEARS = 5


def retention_years(config: dict) -> int:
    """``REGISTRATION_RECORD_RETENTION_YEARS``: how long a submitted version's files are kept."""
    value = config.get("RECORD_RETENTION_YEARS")
    return RECORD_RETENTION_YEARS if value in (None, "") else int(value)


def hold_files(session: Session, person_id: str, holder: str, keys: list[str], until: dt.datetime) -> None:
    """Asks profile (event, through the outbox: sent once this transaction commits) to keep these
    files of the person's form until ``until``, even after they leave the form."""
    if keys:
        outbox.add(session, FilesHeld(person_id=person_id, holder=holder, file_keys=sorted(set(keys)),
                                      held_until=until.replace(tzinfo=dt.timezone.utc)))


def submission_holder(application_id: str, round_: int) -> str:
    return f"submission:{application_id}:{round_}"


def announce_version_holds(session: Session, retention_years: int, after_id: int,
                           limit: int = 500) -> tuple[int, int | None]:
    """Announces again the holds of submitted versions still within their retention period, one
    batch (ids above ``after_id``): after the upgrade to file holds, or after profile's database
    was restored to an earlier point. Profile takes a hold it has already as a no-op. Returns (how
    many announced, the last id looked at, None when no rows are left)."""
    rows = session.execute(select(Submission).where(Submission.id > after_id).order_by(Submission.id)
                           .limit(limit)).scalars().all()
    now, count = utcnow(), 0
    for row in rows:
        until = years_after(row.submitted_at, retention_years)
        if until > now:
            snapshot = ProfileSnapshot.model_validate_json(row.snapshot)
            hold_files(session, snapshot.person_id, submission_holder(row.application_id, row.round),
                       snapshot.file_keys(), until)
            count += 1
    return count, rows[-1].id if rows else None


def announce_certificate_holds(session: Session, after_number: str, limit: int = 500) -> tuple[int, str | None]:
    """As :func:`announce_version_holds`, for the photos of certificates still valid."""
    rows = session.execute(select(HeldCertificate).where(
        HeldCertificate.certificate_number > after_number, HeldCertificate.application_id.is_not(None))
        .order_by(HeldCertificate.certificate_number).limit(limit)).scalars().all()
    today, count = utcnow().date(), 0
    for row in rows:
        if row.valid_until >= today and _hold_certificate_photo(session, row.person_id, row.certificate_number,
                                                                row.application_id, row.valid_until):
            count += 1
    return count, rows[-1].certificate_number if rows else None


# ---- submitting -------------------------------------------------------------------------------

@dataclass
class Submit:
    kind: K
    snapshot: ProfileSnapshot
    policy: ProvincePolicy
    today: dt.date
    actor: str
    applicant_name_masked: str
    application_id: str | None = None
    courses: list[OfflineCourse] | None = None          # re-registration: None = keep the saved ones
    replacement: ReplacementDetails | None = None       # replacement: None = keep the saved details
    retention_years: int = RECORD_RETENTION_YEARS       # how long this version's files are kept


def submit(session: Session, request: Submit) -> Application:
    """Submit a new form, a saved draft, or a corrected form after a rejection: one transaction;
    an error anywhere changes nothing."""
    snapshot = request.snapshot
    person_id = snapshot.person_id
    application = workable_application(session, request.kind, person_id, request.application_id, for_submit=True)
    state = standing(session, person_id, request.policy, request.today, raises=request.kind == K.UPGRADE)
    check_eligible(request.kind, state, snapshot, request.policy, request.today, submitting=True)
    snapshot = effective_snapshot(request.kind, snapshot, state)

    form: dict = {}
    previous = state.certificate.certificate_number if state.certificate and request.kind in (
        K.RE_REGISTRATION, K.UPGRADE) else None
    if request.kind == K.RE_REGISTRATION:
        courses = request.courses if request.courses is not None else (
            stored_courses(application) if application else [])
        check_courses(session, courses, person_id, application.application_id if application else None,
                      state.certificate, request.today)
        summary = ce_summary(session, snapshot, state.certificate, courses, request.policy)
        check_hours(summary)
        form = {"continuing_education": summary.model_dump(mode="json")}
    elif request.kind == K.REPLACEMENT:
        details = request.replacement if request.replacement is not None else (
            stored_replacement(application) if application else ReplacementDetails())
        check_replacement(session, person_id, details, snapshot.region_code, request.policy, request.today)
        form = {"replacement": details.model_dump(mode="json")}

    now = utcnow()
    new = application is None
    if new:
        application = _new_application(session, request.kind, snapshot, S.INITIAL_REVIEW, request.actor)
        resubmission = False
    else:
        _take_snapshot(application, snapshot)
        resubmission = application.round > 0
        move(session, application, S.INITIAL_REVIEW, request.actor, "resubmitted" if resubmission else None)
    application.form = json.dumps(form, ensure_ascii=False) if form else None
    application.previous_certificate_number = previous
    if request.kind == K.REPLACEMENT:
        application.original_no_key = snapshot.region_code[:2] + form["replacement"]["original_certificate_no"]
    application.committed_at = application.submitted_at = application.updated_at = now
    application.rejection_reason = None
    application.round = (application.round or 0) + 1
    session.flush()
    session.add(Submission(application_id=application.application_id, round=application.round, submitted_at=now,
                           actor=request.actor, snapshot=application.snapshot, form=application.form))
    if request.kind == K.RE_REGISTRATION:
        _attach_proofs(session, application.application_id, courses, submitted=True, new=new)
    hold_files(session, person_id, submission_holder(application.application_id, application.round),
               snapshot.file_keys(), years_after(now, request.retention_years))
    audit.record(session, request.actor, "application.submitted", "application", application.application_id,
                 {"kind": request.kind.value, "round": application.round, "profile_revision": snapshot.revision})
    outbox.add(session, ApplicationSubmitted(
        application_id=application.application_id, person_id=person_id, kind=request.kind,
        region_code=application.region_code, applicant_name_masked=request.applicant_name_masked,
        submitted_at=now, resubmission=resubmission, round=application.round, level=snapshot.level))
    return application


# ---- views ------------------------------------------------------------------------------------

def form_view(session: Session, application: Application, policy: ProvincePolicy | None = None,
              today: dt.date | None = None) -> FormView:
    snapshot = ProfileSnapshot.model_validate_json(application.snapshot)
    dumped = snapshot.model_dump()
    data = {name: dumped[name] for name in FormView.model_fields if name in dumped
            and name not in ("person_id", "id_number", "revision")}
    form = _form(application)
    ce = ContinuingEducation.model_validate(form["continuing_education"]) if form.get("continuing_education") else None
    if (ce is not None or application.kind == K.RE_REGISTRATION.value) and policy is not None \
            and S(application.status) == S.NOT_REGISTERED:
        # A draft shows the online hours as the records stand now.
        certificate = current_certificate(session, application.person_id)
        if certificate is not None:
            ce = ce_summary(session, snapshot, certificate, ce.offline_courses if ce else [], policy)
    return FormView(**data, id_number_masked=idcard.mask(snapshot.id_number), profile_revision=snapshot.revision,
                    previous_certificate_number=application.previous_certificate_number,
                    continuing_education=ce,
                    replacement=ReplacementDetails.model_validate(form["replacement"]) if form.get("replacement") else None)


def _latest_submission(session: Session, application_id: str) -> Submission | None:
    return session.execute(select(Submission).where(Submission.application_id == application_id)
                           .order_by(Submission.round.desc()).limit(1)).scalar_one_or_none()


def issuance_data(session: Session, application: Application) -> IssuanceData:
    latest = _latest_submission(session, application.application_id)
    if latest is None:
        raise errors.SwmsError(errors.INVALID_STATE, "该申请尚未提交", "application_id")
    form = json.loads(latest.form) if latest.form else {}
    replacement = ReplacementDetails.model_validate(form.get("replacement") or {})
    return IssuanceData(
        application_id=application.application_id, kind=application.kind,
        snapshot=ProfileSnapshot.model_validate_json(latest.snapshot),
        previous_certificate_number=application.previous_certificate_number,
        original_certificate_no=replacement.original_certificate_no,
        original_registration_type=replacement.registration_type.value if replacement.registration_type else None,
        original_valid_from=replacement.valid_from, original_valid_until=replacement.valid_until,
        continuing_education=form.get("continuing_education"))


def registration_standing(session: Session, person_id: str, policy: ProvincePolicy, today: dt.date) -> RegistrationStanding:
    state = standing(session, person_id, policy, today)
    certificate = state.certificate
    can: list[K] = []
    if certificate is None:
        advice = "您尚未取得登记证书：个人信息表完整后可申请首次登记；持有纸质登记证书的可申请更换电子证"
        can = [K.FIRST_REGISTRATION] + ([] if state.ever_held else [K.REPLACEMENT])
    elif certificate.status == REVOKED:
        advice = "您的登记证书已被撤销，请咨询登记所在地民政部门"
    elif certificate.status == SUSPENDED:
        advice = "您的登记证书已被暂停，暂停期间不能办理登记申请，请咨询登记所在地民政部门"
    elif state.lapsed:
        advice = _lapsed_error(certificate).message
        can = [K.FIRST_REGISTRATION]
    else:
        if today >= state.opens_on:
            advice = (f"您的登记证书有效期至{certificate.valid_until.isoformat()}，现在可以申请再登记"
                      f"（截止{certificate.valid_until.isoformat()}）")
            can.append(K.RE_REGISTRATION)
        else:
            advice = (f"您的登记证书有效期至{certificate.valid_until.isoformat()}，可于{state.opens_on.isoformat()}起申请再登记；"
                      "继续教育学时请在本登记期内完成")
        if state.pending_raise is not None:
            advice += f"。您的职业水平已提升为{state.pending_raise.new_level}（已出证待升级），可申请按新等级换发证书"
            can.append(K.UPGRADE)
    return RegistrationStanding(
        certificate=HeldCertificateOut(certificate_number=certificate.certificate_number, level=certificate.level,
                                       valid_from=certificate.valid_from, valid_until=certificate.valid_until,
                                       status=EXPIRED if state.lapsed else certificate.status) if certificate else None,
        lapsed=state.lapsed, re_registration_opens_on=state.opens_on,
        re_registration_closes_on=certificate.valid_until if certificate else None,
        pending_upgrade_level=state.pending_raise.new_level if state.pending_raise else None,
        can_apply_for=can, advice=advice)


# ---- review and certificate events ------------------------------------------------------------

def _application(session: Session, application_id: str) -> Application | None:
    return session.get(Application, application_id, with_for_update=True)


def _try_move(session: Session, application: Application, target: S, actor: str, reason: str | None,
              event_type: str, event_id: str) -> bool:
    """Events may arrive late or twice under different ids: a move the machine does not allow is
    recorded and ignored instead of failing the handler."""
    if target in TRANSITIONS[K(application.kind)].get(S(application.status), set()):
        move(session, application, target, actor, reason)
        return True
    audit.record(session, actor, "application.event_ignored", "application", application.application_id,
                 {"event": event_type, "event_id": event_id, "status": application.status, "target": target.value})
    return False


def apply_approval(session: Session, event: ApplicationApproved) -> None:
    application = _application(session, event.application_id)
    if application is None:
        return
    if event.final:
        # Approved at the last level: the status becomes 已出证 when the certificate is issued.
        audit.record(session, event.decided_by, "application.final_approved", "application",
                     application.application_id, {"stage": event.stage.value})
    elif S(application.status) == S.INITIAL_REVIEW and K(application.kind) != K.REPLACEMENT:
        move(session, application, S.FINAL_REVIEW, event.decided_by)
    else:
        audit.record(session, event.decided_by, "application.approved", "application", application.application_id,
                     {"stage": event.stage.value, "status": application.status})


def apply_rejection(session: Session, event: ApplicationRejected | ApplicationReturned) -> None:
    application = _application(session, event.application_id)
    if application is None:
        return
    returned = isinstance(event, ApplicationReturned)
    status = S(application.status)
    if K(application.kind) == K.REPLACEMENT:
        target = S.REJECTED
    else:
        target = S.INITIAL_REJECTED if status == S.INITIAL_REVIEW else S.FINAL_REJECTED
    reason = f"退回修改：{event.reason}" if returned else event.reason
    if _try_move(session, application, target, event.decided_by, reason, event.event_type, event.event_id):
        application.rejection_reason = reason


def _record_certificate(session: Session, event: CertificateIssued) -> HeldCertificate:
    held = session.get(HeldCertificate, event.certificate_number)
    now = utcnow()
    if held is None:
        held = HeldCertificate(certificate_number=event.certificate_number, person_id=event.person_id,
                               application_id=event.application_id, level=event.level.value,
                               region_code=event.region_code, valid_from=event.valid_from,
                               valid_until=event.valid_until, issued_at=event.issued_at.replace(tzinfo=None),
                               status=VALID, updated_at=now)
        session.add(held)
        session.flush()
    # Earlier certificates of this person are continued or replaced by this one.
    older = session.execute(select(HeldCertificate).where(
        HeldCertificate.person_id == event.person_id, HeldCertificate.certificate_number != event.certificate_number,
        HeldCertificate.status != SUPERSEDED, HeldCertificate.valid_from <= event.valid_from)).scalars().all()
    for certificate in older:
        certificate.status, certificate.superseded_by, certificate.updated_at = SUPERSEDED, event.certificate_number, now
    audit.record(session, "certificate", "certificate.recorded", "certificate", event.certificate_number,
                 {"application_id": event.application_id, "valid_until": event.valid_until.isoformat(),
                  "superseded": [c.certificate_number for c in older]})
    return held


def apply_issue(session: Session, event: CertificateIssued) -> None:
    _record_certificate(session, event)
    application = _application(session, event.application_id)
    if application is None:
        return
    _hold_certificate_photo(session, event.person_id, event.certificate_number, event.application_id,
                            event.valid_until)
    application.certificate_number = event.certificate_number
    if not _try_move(session, application, S.ISSUED, "certificate", None, event.event_type, event.event_id):
        return
    raise_ = session.get(LevelRaise, event.person_id)
    if raise_ is None or raise_.resolved_at is not None:
        return
    if LEVEL_RANK[event.level.value] >= LEVEL_RANK[raise_.new_level]:
        # The upgrade (or any certificate at the new level) resolves the level raise, and the
        # application that held the old certificate is issued again (no longer pending).
        raise_.resolved_at, raise_.resolved_by_certificate = utcnow(), event.certificate_number
        pending = session.execute(select(Application).where(
            Application.person_id == event.person_id,
            Application.status == S.ISSUED_PENDING_UPGRADE.value)).scalars().all()
        for old in pending:
            move(session, old, S.ISSUED, "certificate", f"已按新等级换发证书{event.certificate_number}")
    else:   # issued at the old level while a raise was already known: pending upgrade at once
        move(session, application, S.ISSUED_PENDING_UPGRADE, "identity", f"职业水平已提升为{raise_.new_level}")


def _hold_certificate_photo(session: Session, person_id: str, number: str, application_id: str,
                            valid_until: dt.date) -> bool:
    """The photo printed on the certificate (that of the version it was issued from) is kept until
    the end of the certificate's validity, even if its submission's retention ends first."""
    latest = _latest_submission(session, application_id)
    photo_key = ProfileSnapshot.model_validate_json(latest.snapshot).photo_key if latest else None
    if photo_key:
        until = dt.datetime.combine(valid_until + dt.timedelta(days=1), dt.time())
        hold_files(session, person_id, f"certificate:{number}", [photo_key], until)
    return bool(photo_key)


def apply_certificate_status(session: Session, number: str, status: str, actor: str, reason: str | None) -> None:
    held = session.get(HeldCertificate, number)
    if held is None or held.status == SUPERSEDED:
        return
    before = held.status
    held.status, held.updated_at = status, utcnow()
    audit.record(session, actor, "certificate.status_changed", "certificate", number,
                 {"from": before, "to": status, "reason": reason})


def apply_reissue(session: Session, event: CertificateReissued) -> None:
    held = session.get(HeldCertificate, event.certificate_number)
    if held is None:
        return
    held.status, held.superseded_by, held.updated_at = SUPERSEDED, event.new_certificate_number, utcnow()
    audit.record(session, event.changed_by, "certificate.superseded", "certificate", event.certificate_number,
                 {"new_certificate_number": event.new_certificate_number, "reason": event.reason})


def apply_level_raise(session: Session, event: PasserLevelRaised) -> None:
    raise_ = session.get(LevelRaise, event.person_id)
    values = dict(previous_level=event.previous_level.value, new_level=event.new_level.value,
                  management_number=event.management_number, exam_year=event.exam_year,
                  raised_at=event.occurred_at.replace(tzinfo=None), resolved_at=None, resolved_by_certificate=None)
    if raise_ is None:
        session.add(LevelRaise(person_id=event.person_id, **values))
    elif LEVEL_RANK[event.new_level.value] > LEVEL_RANK[raise_.new_level]:
        for name, value in values.items():
            setattr(raise_, name, value)
    else:   # the same raise again, or an older one
        return
    session.flush()
    audit.record(session, "identity", "level.raised", "person", event.person_id,
                 {"from": event.previous_level.value, "to": event.new_level.value})
    certificate = current_certificate(session, event.person_id)
    if certificate is None or LEVEL_RANK[certificate.level] >= LEVEL_RANK[event.new_level.value]:
        return
    holder = session.get(Application, certificate.application_id, with_for_update=True) \
        if certificate.application_id else None
    if holder is not None and S(holder.status) == S.ISSUED:
        move(session, holder, S.ISSUED_PENDING_UPGRADE, "identity", f"职业水平已提升为{event.new_level.value}")


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
