"""Registration: 首次登记, 再登记, 更换电子证 and upgrade — drafts that follow the profile, submitted
forms that keep what was submitted, the status machines, continuing education and proofs."""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace
from pathlib import Path

import eventlet
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.registration import domain, progress, proofs
from services.registration.models import (
    EXPIRED,
    REVOKED,
    SUSPENDED,
    VALID,
    Application,
    audit,
    inbox,
    outbox,
)
from services.registration.policy import Policy
from swms import errors, health, idcard
from swms.auth import ADMIN, OFFICER, SERVICE, SOCIAL_WORKER, Auth
from swms.config import REPO_ROOT, required
from swms.contracts.common import ApplicationKind as K
from swms.contracts.common import HealthResponse
from swms.contracts.events import (
    ApplicationAccepted,
    ApplicationApproved,
    ApplicationRejected,
    ApplicationReturned,
    CertificateExpired,
    CertificateIssued,
    CertificateReinstated,
    CertificateReissued,
    CertificateRevoked,
    CertificateSuspended,
    PasserLevelRaised,
    ProfileChanged,
)
from swms.contracts.profile import CompletenessResponse, ProfileSnapshot
from swms.contracts.registration import (
    ApplicationList,
    ApplicationReadRequest,
    ApplicationRef,
    ApplicationResponse,
    ContinuingEducationRecorded,
    DraftDiscarded,
    IssuanceData,
    OpenDraftRequest,
    ProofFile,
    ProofLink,
    ProofLinkRequest,
    ProofRef,
    ProofUploadRequest,
    ProofUploadTicket,
    RegistrationStanding,
    ReplacementDetails,
    ReRegistrationDraftRequest,
    ReplacementDraftRequest,
    SubmitDraftRequest,
    SubmitFirstRegistrationRequest,
    SubmitReplacementRequest,
    SubmitReRegistrationRequest,
    SubmitUpgradeRequest,
)
from swms.contracts.registration import (
    StatusChange as StatusChangeOut,
)
from swms.db import Database
from swms.deadletter import event_handler as retrying_event_handler
from swms.events import on_event
from swms.grouping import Grouped
from swms.ops import OpsEndpoint
from swms.outbox import OutboxRelay
from swms.queues import RpcProxy
from swms.rpc import contract, rpc
from swms.settings import CheckedNumbers
from swms.storage import ObjectStorage

log = logging.getLogger(__name__)


class RegistrationPolicy(DependencyProvider):
    """Loaded once at start; a broken policy file stops the service instead of misjudging forms."""

    def setup(self):
        path = Path(required(self.container.config, "POLICY_PATH"))
        if not path.is_absolute() and not path.exists():
            path = REPO_ROOT / path
        self.policy = Policy.load(path)

    def get_dependency(self, worker_ctx):
        return self.policy


def _response(application: Application, form=None) -> ApplicationResponse:
    review_level, status_text = progress.view(application)
    return ApplicationResponse(
        application_id=application.application_id, person_id=application.person_id,
        kind=application.kind, status=application.status, submitted_at=application.submitted_at,
        rejection_reason=application.rejection_reason, certificate_number=application.certificate_number,
        history=[StatusChangeOut(status=c.status, at=c.at, actor=c.actor, reason=c.reason)
                 for c in application.history],
        created_at=application.created_at, updated_at=application.updated_at, level=application.level,
        round=application.round or 0, form=form, review_level=review_level, status_text=status_text)


def _opened_meanwhile() -> errors.SwmsError:
    """A unique-constraint race (two submissions at once) reads as the rule it protects."""
    return errors.SwmsError(errors.APPLICATION_ALREADY_OPEN,
                            "您已有一份未办结的申请（可能刚刚提交），每人同时只能有一份未办结的申请", "kind")


def _replacement_details(request: ReplacementDraftRequest) -> ReplacementDetails:
    return ReplacementDetails(original_certificate_no=request.original_certificate_no,
                              registration_type=request.registration_type, valid_from=request.valid_from,
                              valid_until=request.valid_until)


def _sent(request, *names: str) -> dict:
    """The draft fields the request names (PATCH): left out = keep the saved value, null = empty."""
    return {name: getattr(request, name) for name in names if name in request.model_fields_set}


class RegistrationService:
    name = "registration"

    config = Config()
    numbers = CheckedNumbers(proofs.NUMBERS)   # every numeric setting checked before anything starts
    db = Database()
    auth = Auth()
    policy = RegistrationPolicy()
    storage = ObjectStorage("REGISTRATION_S3_BUCKET")
    relay = OutboxRelay(outbox, linger_seconds=0.05)   # a burst of submissions: many events per claim and mark
    ops = OpsEndpoint(outbox)   # /healthz, /readyz, /metrics on OPS_PORT, for this process
    sweeper = proofs.ProofSweeper()
    profile = RpcProxy("profile")
    submissions = Grouped(max_size=50)   # submissions arriving together are written together

    # ---- plumbing -----------------------------------------------------------------------------

    def _today(self) -> dt.date:
        return dt.date.today()

    def _profile(self, person_id: str, complete: bool, revision: int | None = None) -> domain.Fetched:
        """The person's 个人信息表 as profile answers it: the snapshot and the completeness check
        (系统校验), fetched at once, before any transaction opens. With ``revision`` (what the
        applicant saw) registration's own copy of exactly that revision serves, without asking
        profile; a profile that has moved on since is refused (``PROFILE_CHANGED``)."""
        fetched = domain.stored_copy(self.db.session, person_id, revision) if revision is not None else None
        if fetched is None:
            fetched = self._fetch_profile(person_id, revision)
        if complete and not fetched.completeness.complete:
            raise domain.incomplete_error(fetched.completeness)
        return fetched

    def _fetch_profile(self, person_id: str, revision: int | None) -> domain.Fetched:
        """The form as profile answers it now (:meth:`_profile`, without registration's copy)."""
        self.db.session.rollback()    # no transaction stays open across the calls below
        snapshot_reply = self.profile.get_snapshot.call_async({"person_id": person_id})
        completeness_reply = self.profile.check_completeness.call_async({"person_id": person_id})
        try:
            with eventlet.Timeout(10):
                completeness = CompletenessResponse.model_validate(completeness_reply.result())
                try:
                    snapshot = ProfileSnapshot.model_validate(snapshot_reply.result())
                except errors.SwmsError as exc:
                    if exc.code == errors.NOT_FOUND:     # no form at all: say what is missing
                        raise domain.incomplete_error(completeness) from None
                    raise
        except eventlet.Timeout:
            raise errors.SwmsError(errors.UPSTREAM_UNAVAILABLE, "系统繁忙，请稍后重试") from None
        fetched = domain.Fetched(snapshot, completeness)
        if revision is not None and snapshot.revision != revision:
            raise errors.SwmsError(
                errors.PROFILE_CHANGED,
                f"个人信息表在您打开本表后已更新（现为第{snapshot.revision}版，您看到的是第{revision}版），"
                "请重新打开表单核对后再提交", "profile_revision")
        return fetched

    def _write(self, work):
        """One transaction; a unique-constraint race (two submissions at once) reads as the
        rule it protects: one open application per person."""
        try:
            with self.db.transaction() as session:
                return work(session)
        except IntegrityError:
            raise _opened_meanwhile() from None

    def _policy_for(self, snapshot: ProfileSnapshot):
        return self.policy.for_region(snapshot.region_code)

    def _submit(self, kind: K, request, courses=None, replacement=None) -> ApplicationResponse:
        """Every submission goes through the container's group commit (``submissions``): alone it is
        a group of one; submissions arriving together share one transaction and one read of each
        kind (``domain.submit_group``). The form is registration's copy of the revision the
        applicant saw, read with the group; without one (or a revision) it is fetched from profile
        first, outside any transaction."""
        caller = self.auth.require(SOCIAL_WORKER)
        if not request.commitment:
            raise errors.SwmsError(errors.COMMITMENT_REQUIRED, "请勾选承诺声明后再提交申请", "commitment")
        revision = request.profile_revision
        work = domain.Submit(kind=kind, snapshot=None, policy=None, today=self._today(), actor=caller.subject,
                             applicant_name_masked=None, application_id=getattr(request, "application_id", None),
                             courses=courses, replacement=replacement,
                             retention_years=domain.retention_years(self.config), copy_revision=revision,
                             policy_for=self.policy.for_region)
        if revision is None:
            work = self._with_live_profile(work, revision)
        outcome = self.submissions.run(work, self._submit_group)
        if outcome == domain.NEEDS_PROFILE:    # no copy of that revision here: profile answers
            outcome = self.submissions.run(self._with_live_profile(work, revision), self._submit_group)
        return _response(outcome, domain.form_view(self.db.session, outcome))

    def _with_live_profile(self, work: domain.Submit, revision: int | None) -> domain.Submit:
        fetched = self._fetch_profile(work.actor, revision)
        if not fetched.completeness.complete:
            raise domain.incomplete_error(fetched.completeness)
        snapshot = fetched.snapshot
        return replace(work, snapshot=snapshot, policy=self._policy_for(snapshot),
                       applicant_name_masked=idcard.mask_name(snapshot.name), fetched=fetched)

    def _submit_group(self, works: list[domain.Submit]) -> list:
        """One transaction for the group. If it fails as a whole (a unique constraint: the same
        person submitting in another process at once), each submission runs again alone, so that
        one conflict refuses only its own submission."""
        try:
            with self.db.transaction() as session:
                return domain.submit_group(session, works)
        except (IntegrityError, errors.SwmsError) as exc:
            if len(works) > 1:
                log.info("a group of %d submissions failed (%s); running them one by one", len(works), exc)
                return [self._submit_group([work])[0] for work in works]
            return [_opened_meanwhile() if isinstance(exc, IntegrityError) else exc]

    def _save(self, kind: K, request, save) -> ApplicationResponse:
        caller = self.auth.require(SOCIAL_WORKER)
        fetched = self._profile(caller.subject, complete=False)
        snapshot = fetched.snapshot
        policy = self._policy_for(snapshot)
        today = self._today()

        def work(session):
            application = domain.workable_application(session, kind, caller.subject, request.application_id,
                                                      for_submit=False)
            application = save(session, application, snapshot, policy, today, caller.subject)
            domain.store_copy(session, fetched)
            return application

        application = self._write(work)
        return _response(application, domain.form_view(self.db.session, application, policy, today))

    def _reader(self, application: Application | None, access_reason: str | None):
        """The caller, if they may read the application: the applicant, services, officers of its
        region, administrators naming why. Officers and administrators never see drafts (round 0)."""
        caller = self.auth.require_reader(application.person_id if application else "",
                                          application.region_code if application else None, access_reason)
        return caller, application is not None and (caller.role not in (OFFICER, ADMIN) or application.round > 0)

    def _audit_admin_read(self, caller, application: Application, method: str, reason: str | None, **detail) -> None:
        """An administrator's read is audited (who, why, what) before anything is answered."""
        if caller.role == ADMIN:
            with self.db.transaction() as session:
                audit.read_by_admin(session, caller.subject, method, "application", application.application_id,
                                    reason, person_id=application.person_id, **detail)

    # ---- RPC: the applicant -------------------------------------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db, self.storage, process=self.ops)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(SubmitFirstRegistrationRequest, ApplicationResponse)
    def submit_first_registration(self, request: SubmitFirstRegistrationRequest):
        """《社会工作者首次登记信息表》: tick the 承诺声明; resubmits after a rejection."""
        return self._submit(K.FIRST_REGISTRATION, request)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(SubmitReRegistrationRequest, ApplicationResponse)
    def submit_re_registration(self, request: SubmitReRegistrationRequest):
        """《社会工作者再登记信息表》: offline courses with proofs; online hours from the records."""
        return self._submit(K.RE_REGISTRATION, request, courses=request.offline_courses)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(SubmitReplacementRequest, ApplicationResponse)
    def submit_replacement(self, request: SubmitReplacementRequest):
        """《社会工作者更换电子证书信息表》: the paper certificate's NO, type and validity."""
        return self._submit(K.REPLACEMENT, request, replacement=_replacement_details(request))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(SubmitUpgradeRequest, ApplicationResponse)
    def submit_upgrade(self, request: SubmitUpgradeRequest):
        """已出证待升级: re-issue at the new level."""
        return self._submit(K.UPGRADE, request)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(SubmitDraftRequest, ApplicationResponse)
    def submit_draft(self, request: SubmitDraftRequest):
        """Submits a saved draft as it stands, or resubmits a rejected application unchanged."""
        caller = self.auth.require(SOCIAL_WORKER)
        application = self.db.session.get(Application, request.application_id)
        if application is None:
            raise errors.not_found("申请", "application_id")
        if application.person_id != caller.subject:
            raise errors.forbidden("无权查看或修改他人的申请")
        kind = K(application.kind)
        self.db.session.rollback()   # the submission reads it again, locked, in its own transaction
        return self._submit(kind, request)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(OpenDraftRequest, ApplicationResponse)
    def open_draft(self, request: OpenDraftRequest):
        """Opens (or returns) the caller's unsubmitted form of this kind, filled from the profile."""
        caller = self.auth.require(SOCIAL_WORKER)
        fetched = self._profile(caller.subject, complete=False)
        snapshot = fetched.snapshot
        policy = self._policy_for(snapshot)
        today = self._today()

        def work(session):
            application = domain.open_draft(session, request.kind, snapshot, policy, today, caller.subject)
            domain.store_copy(session, fetched)
            return application

        application = self._write(work)
        return _response(application, domain.form_view(self.db.session, application, policy, today))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ReRegistrationDraftRequest, ApplicationResponse)
    def save_re_registration_draft(self, request: ReRegistrationDraftRequest):
        """Saves the offline courses of the caller's re-registration draft (or rejected form);
        left out, the saved courses are kept."""
        courses = (request.offline_courses or []) if "offline_courses" in request.model_fields_set else None
        return self._save(K.RE_REGISTRATION, request,
                          lambda session, application, snapshot, policy, today, actor: domain.save_re_registration(
                              session, application, courses, snapshot, policy, today, actor))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ReplacementDraftRequest, ApplicationResponse)
    def save_replacement_draft(self, request: ReplacementDraftRequest):
        """Saves the paper certificate's details in the caller's replacement draft (or rejected
        form): only the fields sent change."""
        changes = _sent(request, *ReplacementDetails.model_fields)
        return self._save(K.REPLACEMENT, request,
                          lambda session, application, snapshot, policy, today, actor: domain.save_replacement(
                              session, application, changes, snapshot, policy, today, actor))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ApplicationRef, DraftDiscarded)
    def discard_draft(self, request: ApplicationRef):
        """Deletes an unsubmitted draft (未登记) of the caller's."""
        caller = self.auth.require(SOCIAL_WORKER)
        self._write(lambda session: domain.discard_draft(session, request.application_id, caller.subject,
                                                         caller.subject))
        return DraftDiscarded(application_id=request.application_id)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ApplicationReadRequest, ApplicationResponse)
    def get_application(self, request: ApplicationReadRequest):
        """Status, reason, certificate number, history and the form (ID number masked)."""
        application = self.db.session.get(Application, request.application_id)
        caller, visible = self._reader(application, request.access_reason)
        if not visible:
            raise errors.not_found("申请", "application_id")
        self._audit_admin_read(caller, application, "get_application", request.access_reason)
        policy = self.policy.for_region(application.region_code)
        return _response(application, domain.form_view(self.db.session, application, policy, self._today()))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, ApplicationList)
    def list_my_applications(self):
        """The caller's applications, drafts included, each with its status history."""
        caller = self.auth.require(SOCIAL_WORKER)
        rows = self.db.session.execute(select(Application).where(Application.person_id == caller.subject)
                                       .order_by(Application.created_at, Application.submitted_at)).scalars().all()
        return ApplicationList(items=[_response(row) for row in rows])

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, RegistrationStanding)
    def my_registration(self):
        """The caller's current certificate, windows, pending upgrade, and what they can apply for."""
        caller = self.auth.require(SOCIAL_WORKER)
        latest = self.db.session.execute(select(Application.region_code).where(Application.person_id == caller.subject)
                                         .order_by(Application.created_at.desc()).limit(1)).scalar()
        return domain.registration_standing(self.db.session, caller.subject, self.policy.for_region(latest or ""),
                                            self._today())

    # ---- RPC: proofs --------------------------------------------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ProofUploadRequest, ProofUploadTicket)
    def request_proof_upload(self, request: ProofUploadRequest):
        """A presigned POST for one proof file (PDF, JPEG or PNG), straight to object storage."""
        caller = self.auth.require(SOCIAL_WORKER)
        with self.db.transaction() as session:
            return proofs.request_upload(session, self.storage, caller.subject, request.filename,
                                         request.content_type, proofs.NUMBERS.get(self.config, "PROOF_MAX_BYTES"))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ProofRef, ProofFile)
    def confirm_proof_upload(self, request: ProofRef):
        """Checks what arrived (size; PDF/JPEG/PNG by content); a bad file is deleted and refused."""
        caller = self.auth.require(SOCIAL_WORKER)
        row = proofs.own_proof(self.db.session, request.proof_key, caller.subject)
        content_type = proofs.ProofContentType(row.content_type)
        if row.status == proofs.PROOF_VERIFIED:
            proofs.delete_upload(self.storage, row.proof_key)   # a POST after the check changes nothing
            return ProofFile(proof_key=row.proof_key, filename=row.filename, content_type=content_type,
                             size=row.size, sha256=row.sha256)
        if row.status != proofs.PROOF_PENDING:
            raise errors.SwmsError(errors.UPLOAD_NOT_FOUND, "这份证明材料已失效，请重新上传", "proof_key")
        self.db.session.rollback()
        outcome = proofs.inspect(self.storage, row.proof_key, content_type, proofs.NUMBERS.get(self.config, "PROOF_MAX_BYTES"))
        if isinstance(outcome, errors.SwmsError):
            if outcome.code != errors.UPLOAD_MISSING:
                self.storage.delete(proofs.upload_key(row.proof_key))
                self.storage.delete(row.proof_key)   # left by an attempt that crashed
                with self.db.transaction() as session:
                    proofs.forget(session, row.proof_key, outcome.code)
            raise outcome
        size, sha256 = outcome
        with self.db.transaction() as session:
            row = proofs.mark_verified(session, row.proof_key, size, sha256)
        proofs.delete_upload(self.storage, row.proof_key)
        return ProofFile(proof_key=row.proof_key, filename=row.filename, content_type=content_type, size=row.size,
                         sha256=row.sha256)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ProofLinkRequest, ProofLink)
    def get_proof_link(self, request: ProofLinkRequest):
        """A short-lived link to a proof on a form: the applicant, officers of the region, services,
        an administrator naming why (audited)."""
        application = self.db.session.get(Application, request.application_id)
        caller, visible = self._reader(application, request.access_reason)
        if not visible or not any(course.proof_key == request.proof_key
                                  for course in domain.stored_courses(application)):
            raise errors.not_found("证明材料", "proof_key")
        self._audit_admin_read(caller, application, "get_proof_link", request.access_reason,
                               proof_key=request.proof_key)
        url = self.storage.download_url(request.proof_key, proofs.LINK_SECONDS)
        return ProofLink(url=url, expires_in_seconds=proofs.LINK_SECONDS)

    # ---- RPC: services ------------------------------------------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ApplicationRef, IssuanceData)
    def get_issuance_data(self, request: ApplicationRef):
        """For the certificate service only: the snapshot as submitted, full ID number included."""
        self.auth.require(SERVICE)
        application = self.db.session.get(Application, request.application_id)
        if application is None:
            raise errors.not_found("申请", "application_id")
        return domain.issuance_data(self.db.session, application)

    # ---- events -------------------------------------------------------------------------------

    @on_event(ApplicationAccepted, inbox)
    def on_application_accepted(self, session, event: ApplicationAccepted):
        domain.apply_acceptance(session, event)

    @on_event(ApplicationApproved, inbox)
    def on_application_approved(self, session, event: ApplicationApproved):
        domain.apply_approval(session, event)

    @on_event(ApplicationRejected, inbox)
    def on_application_rejected(self, session, event: ApplicationRejected):
        domain.apply_rejection(session, event)

    @on_event(ApplicationReturned, inbox)
    def on_application_returned(self, session, event: ApplicationReturned):
        domain.apply_rejection(session, event)

    @on_event(CertificateIssued, inbox)
    def on_certificate_issued(self, session, event: CertificateIssued):
        domain.apply_issue(session, event)

    @on_event(CertificateReissued, inbox)
    def on_certificate_reissued(self, session, event: CertificateReissued):
        domain.apply_reissue(session, event)

    @on_event(CertificateRevoked, inbox)
    def on_certificate_revoked(self, session, event: CertificateRevoked):
        domain.apply_certificate_status(session, event.certificate_number, REVOKED, event.changed_by, event.reason)

    @on_event(CertificateSuspended, inbox)
    def on_certificate_suspended(self, session, event: CertificateSuspended):
        domain.apply_certificate_status(session, event.certificate_number, SUSPENDED, event.changed_by, event.reason)

    @on_event(CertificateReinstated, inbox)
    def on_certificate_reinstated(self, session, event: CertificateReinstated):
        domain.apply_certificate_status(session, event.certificate_number, VALID, event.changed_by, event.reason)

    @on_event(CertificateExpired, inbox)
    def on_certificate_expired(self, session, event: CertificateExpired):
        domain.apply_certificate_status(session, event.certificate_number, EXPIRED, event.changed_by, event.reason)

    @on_event(PasserLevelRaised, inbox)
    def on_passer_level_raised(self, session, event: PasserLevelRaised):
        domain.apply_level_raise(session, event)

    @retrying_event_handler(ProfileChanged.source, ProfileChanged.event_type)
    def on_profile_changed(self, payload):
        """The profile changed: fetch it (snapshot and completeness, as a service), keep the copy,
        and refresh the person's drafts (a submitted form never changes), in one transaction with
        the inbox row. If profile does not answer, the drafts are flagged instead and follow when
        next opened or saved. A snapshot older than what is stored is never applied."""
        event = ProfileChanged.model_validate(payload)
        self.auth.act_as_service()
        try:
            fetched = self._profile(event.person_id, complete=False)
        except errors.SwmsError as exc:
            # Flag the drafts now (they refresh when next opened), and let the event come back
            # later (swms.deadletter: retried with backoff, dead-lettered if it keeps failing).
            log.warning("profile_changed %s: profile of %s not fetched (%s); drafts flagged, retrying later",
                        event.event_id, event.person_id, exc.code)
            with self.db.transaction() as session:
                domain.mark_profile_changed(session, event.person_id, event.revision)
            raise
        with self.db.transaction() as session:
            if not inbox.first_delivery(session, event.event_id, "on_profile_changed"):
                return
            domain.store_copy(session, fetched)
            if domain.mark_profile_changed(session, event.person_id, event.revision):
                policy = self.policy.for_region(fetched.snapshot.region_code)
                state = domain.standing(session, event.person_id, policy, self._today())
                domain.refresh_drafts(session, fetched.snapshot, state, "profile")

    @retrying_event_handler(ContinuingEducationRecorded.source, ContinuingEducationRecorded.event_type)
    def on_course_completed(self, payload):
        """线上学时 from the learning platform. A malformed record is refused (audited, and
        dead-lettered with its reason), and changes nothing; the same event delivered twice is
        applied once; an older version arriving after a newer one is ignored."""
        try:
            event = ContinuingEducationRecorded.model_validate(payload)
        except ValidationError as exc:
            reasons = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False,
                                                                                       include_input=False)]
            with self.db.transaction() as session:
                audit.record(session, "learning", "ce_record.refused", "ce_record",
                             str(payload.get("record_id", "?"))[:64] if isinstance(payload, dict) else "?",
                             {"reasons": reasons})
            raise   # dead-lettered with its reason (swms.deadletter), for the platform's operators
        with self.db.transaction() as session:
            if not inbox.first_delivery(session, event.event_id, "on_course_completed"):
                return
            domain.record_ce(session, source=event.source, record_id=event.record_id, course=event.course,
                             provider=event.provider, hours=event.hours, completed_on=event.completed_on,
                             person_id=event.person_id, withdrawn=event.withdrawn, actor="learning",
                             source_time=event.occurred_at)
