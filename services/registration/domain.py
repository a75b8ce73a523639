"""Registration rules in plain Python over a SQLAlchemy session: where the application kinds
meet — eligibility, drafts, submitting, the views, and what review and certificate events do to an
application. Each kind's own rules are in first_registration, re_registration and replacement, the
shared ones in common (all re-exported here for callers). The service gathers what other services
know (the profile) before the transaction and passes it in; nothing here talks to the network."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from typing import Callable

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from services.registration import first_registration, progress, re_registration, replacement
from services.registration.common import *  # noqa: F401,F403 (callers use domain.<shared rule>)
from services.registration.common import (
    LEVEL_RANK, RECORD_RETENTION_YEARS, TRANSITIONS, Standing, _already_open, _form, _hold_certificate_photo,
    Fetched, _lapsed_error, _latest_submission, _new_application, _release_proofs, _take_snapshot,
    current_certificate, current_certificates, file_hold, hold_files, incomplete_error, move, open_application,
    open_applications, own_application, refresh_draft, standing, store_copy, stored_copies, submission_holder,
    usable_copy, workable_application, years_after,
)
from services.registration.first_registration import check_exam_window  # noqa: F401 (re-exported)
from services.registration.re_registration import (  # noqa: F401 (re-exported)
    _attach_proofs, _tenths, attach_submitted_proofs, ce_summary, check_courses, check_hours, online_records,
    online_records_of, proofs_named, record_ce, records_in_period, stored_courses)
from services.registration.replacement import (  # noqa: F401 (re-exported)
    check_replacement, effective_snapshot, stored_replacement)
from services.registration.models import (
    EXPIRED, REVOKED, SUPERSEDED, SUSPENDED, VALID, Application, HeldCertificate, LevelRaise, Submission, audit,
    outbox,
)
from services.registration.policy import ProvincePolicy
from swms import errors, idcard
from swms.contracts.common import ApplicationKind as K
from swms.contracts.common import ApplicationStatus as S
from swms.contracts.events import (
    ApplicationAccepted, ApplicationApproved, ApplicationRejected, ApplicationReturned, ApplicationSubmitted,
    CertificateIssued, CertificateReissued, PasserLevelRaised,
)
from swms.contracts.profile import ProfileSnapshot
from swms.contracts.registration import (
    ContinuingEducation, FormView, IssuanceData, OfflineCourse, RegistrationStanding, ReplacementDetails,
)
from swms.contracts.registration import HeldCertificate as HeldCertificateOut
from swms.outbox import utcnow


def check_eligible(kind: K, state: Standing, snapshot: ProfileSnapshot, policy: ProvincePolicy,
                   today: dt.date, submitting: bool) -> None:
    """Whether the person may have a form of this kind; ``submitting`` adds the time windows that
    only bind the submission (a re-registration form may be prepared before its window opens)."""
    if kind == K.FIRST_REGISTRATION:
        first_registration.check_eligible(state, snapshot, policy, today)
    elif kind == K.RE_REGISTRATION:
        re_registration.check_eligible(state, policy, today, submitting)
    elif kind == K.REPLACEMENT:
        replacement.check_replacement_eligible(state)
    elif kind == K.UPGRADE:
        replacement.check_upgrade_eligible(state)


# ---- drafts -----------------------------------------------------------------------------------

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


def refresh_drafts(session: Session, snapshot: ProfileSnapshot, state: Standing | None, actor: str) -> int:
    drafts = session.execute(select(Application).where(Application.person_id == snapshot.person_id,
                                                       Application.status == S.NOT_REGISTERED.value)
                             .with_for_update()).scalars().all()
    changed = 0
    for draft in drafts:
        effective = effective_snapshot(K(draft.kind), snapshot, state) if state else snapshot
        changed += refresh_draft(session, draft, effective, actor)
    return changed


# ---- saving the applicant's part --------------------------------------------------------------

def save_re_registration(session: Session, application: Application | None, courses: list[OfflineCourse] | None,
                         snapshot: ProfileSnapshot, policy: ProvincePolicy, today: dt.date, actor: str) -> Application:
    """``courses`` None: keep the saved ones (a save names only what it changes)."""
    state = standing(session, snapshot.person_id, policy, today)
    if application is None:
        application = open_draft(session, K.RE_REGISTRATION, snapshot, policy, today, actor)
    else:
        check_eligible(K.RE_REGISTRATION, state, snapshot, policy, today, submitting=False)
        refresh_draft(session, application, snapshot, actor)
    return re_registration.save_form(session, application, courses, state.certificate, snapshot, policy, today,
                                     actor)


def save_replacement(session: Session, application: Application | None, changes: dict,
                     snapshot: ProfileSnapshot, policy: ProvincePolicy, today: dt.date, actor: str) -> Application:
    """``changes``: the fields the applicant sent; the others keep their saved values."""
    if application is None:
        application = open_draft(session, K.REPLACEMENT, snapshot, policy, today, actor)
    else:
        check_eligible(K.REPLACEMENT, standing(session, snapshot.person_id, policy, today), snapshot, policy,
                       today, submitting=False)
        refresh_draft(session, application, snapshot, actor)
    return replacement.save_form(session, application, changes, snapshot, actor)


# ---- submitting -------------------------------------------------------------------------------

@dataclass
class Submit:
    """One submission. ``snapshot`` None: the person's stored copy of ``copy_revision`` is the
    form (read with the group's other reads; ``policy`` and ``applicant_name_masked`` are then
    derived from it through ``policy_for``); if that copy is gone or older, the outcome is
    :data:`NEEDS_PROFILE` (the caller fetches the form from profile and submits again)."""
    kind: K
    snapshot: ProfileSnapshot | None
    policy: ProvincePolicy | None
    today: dt.date
    actor: str
    applicant_name_masked: str | None
    application_id: str | None = None
    courses: list[OfflineCourse] | None = None          # re-registration: None = keep the saved ones
    replacement: ReplacementDetails | None = None       # replacement: None = keep the saved details
    retention_years: int = RECORD_RETENTION_YEARS       # how long this version's files are kept
    copy_revision: int | None = None
    policy_for: Callable[[str], ProvincePolicy] | None = None
    fetched: Fetched | None = None                      # fetched from profile just now: stored as the copy


NEEDS_PROFILE = "needs_profile"


def submit(session: Session, request: Submit) -> Application:
    """Submit a new form, a saved draft, or a corrected form after a rejection: one transaction;
    an error anywhere changes nothing. A group of one of :func:`submit_group`."""
    outcome = submit_group(session, [request])[0]
    if isinstance(outcome, BaseException):
        raise outcome
    if outcome == NEEDS_PROFILE:
        raise errors.SwmsError(errors.PROFILE_CHANGED, "个人信息表已更新，请重新打开表单核对后再提交", "profile_revision")
    return outcome


@dataclass
class _Accepted:
    request: Submit
    application: Application
    snapshot: ProfileSnapshot
    new: bool
    resubmission: bool
    courses: list[OfflineCourse] | None


def submit_group(session: Session, requests: list[Submit]) -> list:
    """Several submissions in one transaction, the outcome of each in order: its application, the
    ``SwmsError`` refusing it alone, or :data:`NEEDS_PROFILE`. What the rules need is read for the
    whole group, one statement per kind of read; the rules are those of a single submission, checked
    one submission after another on those rows (a second submission of the same person meets the
    first's application, as it would one already committed); the accepted ones are written together.
    An error raised (not returned) leaves the transaction to be rolled back: the caller runs the
    submissions again one by one (``service._submit_group``)."""
    outcomes: list = [None] * len(requests)
    copies = stored_copies(session, [r.actor for r in requests if r.snapshot is None])
    for index, request in enumerate(requests):
        if request.snapshot is None:
            fetched = usable_copy(copies.get(request.actor), request.copy_revision)
            if fetched is None:
                outcomes[index] = NEEDS_PROFILE
            elif not fetched.completeness.complete:
                outcomes[index] = incomplete_error(fetched.completeness)
            else:
                snapshot = fetched.snapshot
                requests[index] = replace(request, snapshot=snapshot, policy=request.policy_for(snapshot.region_code),
                                          applicant_name_masked=idcard.mask_name(snapshot.name))
    live = [(i, r) for i, r in enumerate(requests) if outcomes[i] is None]
    persons = sorted({r.snapshot.person_id for _, r in live})
    open_found = open_applications(session, persons) if persons else {}
    certificates = current_certificates(session, persons) if persons else {}
    re_registrations = [r for _, r in live if r.kind == K.RE_REGISTRATION]
    records = online_records_of(session, [r.snapshot for r in re_registrations])
    proofs = proofs_named(session, [c.proof_key for r in re_registrations for c in r.courses or []])
    # Saved forms whose courses are kept: their proofs are read one by one (not in the read above).
    accepted: list[_Accepted] = []
    for index, request in live:
        try:
            checked = _check(session, request, open_found, certificates, records, proofs)
        except errors.SwmsError as exc:
            outcomes[index] = exc
            continue
        accepted.append(_apply(session, request, *checked))    # an error here fails the group
        outcomes[index] = accepted[-1].application
        open_found[request.snapshot.person_id] = accepted[-1].application
    if accepted:
        _write_submissions(session, accepted)
    return outcomes


def _check(session: Session, request: Submit, open_found: dict, certificates: dict, records: list,
           proofs: dict) -> tuple:
    """The rules of one submission on the group's rows (a refusal raises); changes nothing."""
    snapshot = request.snapshot
    person_id = snapshot.person_id
    application = workable_application(session, request.kind, person_id, request.application_id, for_submit=True,
                                       open_found=open_found.get(person_id))
    state = standing(session, person_id, request.policy, request.today, raises=request.kind == K.UPGRADE,
                     certificate=certificates.get(person_id))
    check_eligible(request.kind, state, snapshot, request.policy, request.today, submitting=True)
    snapshot = effective_snapshot(request.kind, snapshot, state)

    form: dict = {}
    courses = None
    previous = state.certificate.certificate_number if state.certificate and request.kind in (
        K.RE_REGISTRATION, K.UPGRADE) else None
    if request.kind == K.RE_REGISTRATION:
        kept = request.courses is None
        courses = stored_courses(application) if kept and application else (request.courses or [])
        check_courses(session, courses, person_id, application.application_id if application else None,
                      state.certificate, request.today, proofs=None if kept else proofs)
        certificate = state.certificate
        summary = ce_summary(session, snapshot, certificate, courses, request.policy, records=records_in_period(
            records, snapshot.person_id, snapshot.id_number, certificate.valid_from, certificate.valid_until))
        check_hours(summary)
        form = {"continuing_education": summary.model_dump(mode="json")}
    elif request.kind == K.REPLACEMENT:
        details = request.replacement if request.replacement is not None else (
            stored_replacement(application) if application else ReplacementDetails())
        check_replacement(session, person_id, details, snapshot.region_code, request.policy, request.today)
        form = {"replacement": details.model_dump(mode="json")}
    return application, snapshot, form, previous, courses


def _apply(session: Session, request: Submit, application: Application | None, snapshot: ProfileSnapshot,
           form: dict, previous: str | None, courses: list[OfflineCourse] | None) -> _Accepted:
    """A checked submission's application, new or moved to 初审中 (not yet flushed)."""
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
    progress.restart(application)
    return _Accepted(request, application, snapshot, new, resubmission, courses)


def _write_submissions(session: Session, accepted: list[_Accepted]) -> None:
    """The accepted submissions' rows: one flush for the applications and their history, then one
    statement per table (executemany) for the versions, the proofs, the audit rows and the events."""
    for item in accepted:
        if item.request.fetched is not None:
            store_copy(session, item.request.fetched)
    session.flush()     # the applications (and history) first: the versions below refer to them
    # Versions by a statement built once (nothing here reads them back as objects).
    session.execute(_INSERT_SUBMISSION, [dict(
        application_id=a.application.application_id, round=a.application.round, submitted_at=a.application.submitted_at,
        actor=a.request.actor, snapshot=a.application.snapshot, form=a.application.form) for a in accepted])
    attach_submitted_proofs(session, [(a.application.application_id, a.courses, a.new) for a in accepted
                                      if a.request.kind == K.RE_REGISTRATION])
    audit.record_many(session, [(a.request.actor, "application.submitted", "application", a.application.application_id,
                                 {"kind": a.request.kind.value, "round": a.application.round,
                                  "profile_revision": a.snapshot.revision}) for a in accepted])
    events = []
    for a in accepted:
        application, snapshot = a.application, a.snapshot
        events.append(ApplicationSubmitted(
            application_id=application.application_id, person_id=snapshot.person_id, kind=a.request.kind,
            region_code=application.region_code, applicant_name_masked=a.request.applicant_name_masked,
            submitted_at=application.submitted_at, resubmission=a.resubmission, round=application.round,
            level=snapshot.level,
            files_held=file_hold(submission_holder(application.application_id, application.round),
                                 snapshot.file_keys(), years_after(application.submitted_at, a.request.retention_years))))
    outbox.add(session, *events)   # one insert


_INSERT_SUBMISSION = insert(Submission.__table__)


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


def _earlier_round(session: Session, application: Application,
                   event: ApplicationApproved | ApplicationRejected | ApplicationReturned) -> bool:
    """A decision on an earlier submission round, arriving late (after the resubmission), says
    nothing about the round under review now: recorded and ignored."""
    if event.round is None or event.round >= (application.round or 0):
        return False
    audit.record(session, event.decided_by, "application.event_ignored", "application", application.application_id,
                 {"event": event.event_type, "event_id": event.event_id, "round": event.round,
                  "current_round": application.round})
    return True


def apply_acceptance(session: Session, event: ApplicationAccepted) -> None:
    application = _application(session, event.application_id)
    if application is not None:
        progress.record(session, application, event.round, event.level, event.stage, progress.PENDING, "review")


def apply_approval(session: Session, event: ApplicationApproved) -> None:
    application = _application(session, event.application_id)
    if application is None or _earlier_round(session, application, event):
        return
    if event.final:
        progress.record(session, application, event.round, event.level, event.stage, progress.APPROVED,
                        event.decided_by)
    else:   # it waits at the next level now
        progress.record(session, application, event.round, event.next_level, event.next_stage, progress.PENDING,
                        event.decided_by)
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
    if application is None or _earlier_round(session, application, event):
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
        progress.record(session, application, event.round, event.level, event.stage,
                        progress.RETURNED if returned else progress.REJECTED, event.decided_by)


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
