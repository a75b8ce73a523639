"""Rules every application kind shares: the status machines, dates, what the person holds, the
profile copy, finding and creating the application, the proofs a form names, and the files a
submitted version holds. The kinds' own rules are in first_registration, re_registration and
replacement; domain joins them."""
from __future__ import annotations

import calendar
import datetime as dt
import json
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, true, update
from sqlalchemy.orm import Session

from services.registration.models import (
    EXPIRED, REVOKED, SUPERSEDED, SUSPENDED, Application, HeldCertificate, LevelRaise, ProfileCopy, ProofFileRow,
    StatusChange, Submission, audit, outbox,
)
from services.registration.policy import ProvincePolicy
from swms import errors
from swms.contracts.common import ApplicationKind as K
from swms.contracts.common import ApplicationStatus as S
from swms.contracts.common import Level
from swms.contracts.events import FileHold, FilesHeld
from swms.contracts.profile import CompletenessResponse, ProfileSnapshot
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




# ---- what the person holds --------------------------------------------------------------------

@dataclass
class Standing:
    certificate: HeldCertificate | None
    lapsed: bool
    opens_on: dt.date | None
    pending_raise: LevelRaise | None
    ever_held: bool


# The statements every submission runs are built once, with bound parameters: building a
# statement (and its cache key) costs more than PostgreSQL running it.
_CURRENT_CERTIFICATE = (
    select(HeldCertificate).where(HeldCertificate.person_id == bindparam("person_id"),
                                  HeldCertificate.status != SUPERSEDED)
    .order_by(HeldCertificate.valid_until.desc(), HeldCertificate.issued_at.desc()).limit(1))
_OPEN_APPLICATION = select(Application).where(Application.open_person_id == bindparam("person_id")).with_for_update()
# ... and those a group of submissions runs, for all its people at once.
_CERTIFICATES_OF = select(HeldCertificate).where(HeldCertificate.person_id.in_(bindparam("person_ids", expanding=True)),
                                                 HeldCertificate.status != SUPERSEDED)
_OPEN_APPLICATIONS = (select(Application).where(Application.open_person_id.in_(bindparam("person_ids", expanding=True)))
                      .with_for_update())


def current_certificate(session: Session, person_id: str) -> HeldCertificate | None:
    return session.execute(_CURRENT_CERTIFICATE, {"person_id": person_id}).scalar_one_or_none()


_UNREAD = object()


def current_certificates(session: Session, person_ids: list[str]) -> dict[str, HeldCertificate]:
    """:func:`current_certificate` of several people, in one statement (a group of submissions)."""
    current: dict[str, HeldCertificate] = {}
    for row in session.execute(_CERTIFICATES_OF, {"person_ids": person_ids}).scalars():
        held = current.get(row.person_id)
        if held is None or (row.valid_until, row.issued_at) > (held.valid_until, held.issued_at):
            current[row.person_id] = row
    return current


def standing(session: Session, person_id: str, policy: ProvincePolicy, today: dt.date,
             raises: bool = True, certificate: HeldCertificate | None = _UNREAD) -> Standing:
    """What the person holds; ``raises`` False skips the level-raise lookup (kinds that ignore it);
    ``certificate``: the current one, when already read (:func:`current_certificates`)."""
    if certificate is _UNREAD:
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


_PROFILE_COPY = select(ProfileCopy).where(ProfileCopy.person_id == bindparam("person_id"))   # built once
_PROFILE_COPIES = select(ProfileCopy).where(ProfileCopy.person_id.in_(bindparam("person_ids", expanding=True)))


def stored_copy(session: Session, person_id: str, revision: int) -> Fetched | None:
    """The stored copy if it is exactly the revision the applicant saw, and recent."""
    # A statement built once rather than session.get, which builds one (and its cache key) per call.
    return usable_copy(session.execute(_PROFILE_COPY, {"person_id": person_id}).scalar_one_or_none(), revision)


def stored_copies(session: Session, person_ids: list[str]) -> dict[str, ProfileCopy]:
    """The stored copies of several people, in one statement (see :func:`usable_copy`)."""
    if not person_ids:
        return {}
    return {row.person_id: row for row in session.execute(_PROFILE_COPIES, {"person_ids": person_ids}).scalars()}


def usable_copy(row: ProfileCopy | None, revision: int) -> Fetched | None:
    """The copy if it is exactly the revision the applicant saw, and recent."""
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
    return session.execute(_OPEN_APPLICATION, {"person_id": person_id}).scalar_one_or_none()


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



def open_applications(session: Session, person_ids: list[str]) -> dict[str, Application]:
    """:func:`open_application` of several people, in one statement (locked, as it)."""
    rows = session.execute(_OPEN_APPLICATIONS, {"person_ids": person_ids}).scalars()
    return {row.open_person_id: row for row in rows}


def workable_application(session: Session, kind: K, person_id: str, application_id: str | None,
                         for_submit: bool, open_found: Application | None = _UNREAD) -> Application | None:
    """The caller's open application of ``kind`` that may be changed now, or None (a new one).
    ``open_found``: the person's open application, when already read (:func:`open_applications`)."""
    if application_id is not None:
        application = own_application(session, application_id, person_id)
        if application.kind != kind.value:
            raise errors.SwmsError(errors.INVALID_STATE,
                                   f"该申请是{KIND_NAMES[K(application.kind)]}申请，不是{KIND_NAMES[kind]}申请",
                                   "application_id")
    else:
        application = open_application(session, person_id) if open_found is _UNREAD else open_found
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


# ---- creating and following the profile -----------------------------------------------------

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


# ---- the proofs a form names --------------------------------------------------------------------

def _release_proofs(session: Session, application_id: str, keep: set[str]) -> None:
    """Proofs no longer on a form, and never submitted, become orphans (deleted later)."""
    session.execute(update(ProofFileRow).where(ProofFileRow.application_id == application_id,
                                               ProofFileRow.proof_key.not_in(keep) if keep else true(),
                                               ProofFileRow.submitted.is_(False))
                    .values(application_id=None, released_at=utcnow()))


def _form(application: Application) -> dict:
    return json.loads(application.form) if application.form else {}


# ---- keeping the files a submitted version names (docs/operations.md, 文件保留) ------------------

RECORD_RETENTION_YEARS = 5


def retention_years(config: dict) -> int:
    """``REGISTRATION_RECORD_RETENTION_YEARS``: how long a submitted version's files are kept."""
    value = config.get("RECORD_RETENTION_YEARS")
    return RECORD_RETENTION_YEARS if value in (None, "") else int(value)


def hold_files(session: Session, person_id: str, holder: str, keys: list[str], until: dt.datetime) -> None:
    """Asks profile (event, through the outbox: sent once this transaction commits) to keep these
    files of the person's form until ``until``, even after they leave the form."""
    event = files_held(person_id, holder, keys, until)
    if event is not None:
        outbox.add(session, event)


def files_held(person_id: str, holder: str, keys: list[str], until: dt.datetime) -> FilesHeld | None:
    """The event of :func:`hold_files`, for a caller that writes it with its other events."""
    hold = file_hold(holder, keys, until)
    return None if hold is None else FilesHeld(person_id=person_id, **hold.model_dump())


def file_hold(holder: str, keys: list[str], until: dt.datetime) -> FileHold | None:
    """What profile is asked to keep (none when there are no files), in an event of any kind."""
    if not keys:
        return None
    return FileHold(holder=holder, file_keys=sorted(set(keys)), held_until=until.replace(tzinfo=dt.timezone.utc))


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


def _latest_submission(session: Session, application_id: str) -> Submission | None:
    return session.execute(select(Submission).where(Submission.application_id == application_id)
                           .order_by(Submission.round.desc()).limit(1)).scalar_one_or_none()


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
