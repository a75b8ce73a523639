"""Certificate: issues the e-certificate on final approval; 查看证书; public verification;
revocation, suspension and reinstatement by officers; expiry; re-issue on upgrade."""
from __future__ import annotations

import datetime as dt
import logging

import eventlet
from nameko.dependency_providers import Config
from nameko.timer import timer
from pydantic import ValidationError

from services.certificate import credentials, domain, issuing, status_lists, tokens
from services.certificate.keys import CertificateKeys
from services.certificate.models import (
    FAILED,
    ISSUING,
    Certificate,
    IssueRequest,
    audit,
    inbox,
    outbox,
    throttle,
)
from services.certificate.renderer import RenderWorkers
from services.certificate.settings import NUMBERS, verify_limits
from swms import errors, health
from swms.auth import ACCESS_REASON, ADMIN, ADMIN_READ_NEEDS_REASON, Auth
from swms.contracts.certificate import (
    CertificateRequest,
    CertificateStatus,
    CertificateView,
    IssuanceStatus,
    IssuanceStatusRequest,
    SigningCertificates,
    StatusChangeRequest,
    StatusListCredential,
    StatusListRequest,
    VerificationResult,
    VerifyRequest,
)
from swms.contracts.common import HealthResponse
from swms.contracts.events import ApplicationApproved, PasserLevelRaised
from swms.db import Database, DatabaseAccess
from swms.deadletter import guarded_event_handler
from swms.events import on_event
from swms.ops import OpsEndpoint
from swms.outbox import OutboxRelay, utcnow
from swms.queues import RequeuePause, RpcProxy
from swms.rpc import contract, rpc
from swms.settings import CheckedNumbers, config_timer
from swms.storage import ObjectStorage
from swms.throttle import ClientAddress

log = logging.getLogger(__name__)
DOWNLOAD_LINK_SECONDS = 300
UNKNOWN_ADDRESS = "unknown"   # callers that pass no client_ip share one bucket (docs/contracts.md)
_requeue_pause = RequeuePause()


class CertificateDatabase(Database):
    """The usual per-worker session, plus ``fresh()`` for greenthreads that need their own."""

    def get_dependency(self, worker_ctx):
        access = super().get_dependency(worker_ctx)
        access.fresh = lambda: DatabaseAccess(self.session_factory)
        return access


def _today() -> dt.date:
    return dt.date.today()


class CertificateService:
    name = "certificate"

    config = Config()
    numbers = CheckedNumbers(NUMBERS)   # every numeric setting checked before anything starts
    db = CertificateDatabase()
    auth = Auth()
    storage = ObjectStorage("CERTIFICATE_S3_BUCKET")
    relay = OutboxRelay(outbox, linger_seconds=0.1)   # issuing flat out: several events per claim and mark
    ops = OpsEndpoint(outbox)   # /healthz, /readyz, /metrics on OPS_PORT, for this process
    keys = CertificateKeys()
    renderer = RenderWorkers()
    registration = RpcProxy("registration")
    profile = RpcProxy("profile")
    client_ip = ClientAddress()

    def _issuer(self, db=None) -> issuing.Issuer:
        return issuing.Issuer(db or self.db, self.storage, self.renderer, self.keys, self.registration, self.profile,
                              issuing.Settings.from_config(self.config), _today)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db, self.storage, process=self.ops)

    # ---- issue ----------------------------------------------------------------------------------

    # Nameko's requeue on error (issue requests carry their own retries); an undecodable body is
    # dead-lettered with a bounded log line instead of being logged whole and dropped.
    @guarded_event_handler(ApplicationApproved.source, ApplicationApproved.event_type, requeue_on_error=True)
    def on_application_approved(self, payload):
        """Record the final approval first (so nothing after it can lose it), then issue."""
        try:
            event = ApplicationApproved.model_validate(payload)
        except ValidationError:
            log.error("application_approved with an invalid payload ignored: %s", str(payload)[:500])
            return
        if not event.final:
            return
        settings = issuing.Settings.from_config(self.config)
        try:
            with self.db.transaction() as session:  # recorded and claimed in one commit
                request = domain.record_and_claim(session, event, utcnow(), settings.lease_seconds)
        except Exception:
            # The database is away: the broker redelivers, not in a hot loop, and (quorum queues)
            # not so often that an outage spends the delivery limit (swms.queues.RequeuePause).
            eventlet.sleep(_requeue_pause.failed())
            raise
        _requeue_pause.succeeded()
        if request is None:
            return  # issued already, refused, or another worker holds it (the sweep covers a dead one)
        self.auth.act_as_service()
        self._issuer().process(event.application_id, claimed=True, request=request)

    @config_timer(NUMBERS, "CERT_RETRY_POLL_SECONDS")
    def retry_pending_issues(self):
        """Takes up approvals whose issue failed for a passing reason (or whose worker died)."""
        with self.db.transaction() as session:
            due = domain.due_requests(session, utcnow(), limit=50)
        if not due:
            return
        self.auth.act_as_service()
        pool = eventlet.GreenPool(max(2, self.renderer.size * 2))

        def work(application_id: str) -> None:
            access = self.db.fresh()
            try:
                self._issuer(access).process(application_id)
            finally:
                access.close()

        for application_id in due:
            pool.spawn_n(work, application_id)
        pool.waitall()

    # ---- lifecycle --------------------------------------------------------------------------------

    @config_timer(NUMBERS, "CERT_EXPIRY_CHECK_SECONDS", eager=True)
    def expire_certificates(self):
        """Certificates past their validity become expired (certificate_expired), in batches."""
        while True:
            with self.db.transaction() as session:
                expired = domain.expire_due(session, _today(), utcnow(), self.keys.id_hash_key)
            if expired:
                log.info("expired %d certificates", len(expired))
            if len(expired) < 500:
                return

    @on_event(PasserLevelRaised, inbox)
    def on_passer_level_raised(self, session, event: PasserLevelRaised):
        """已出证待升级: the holder's certificate waits for the upgrade re-issue."""
        domain.mark_pending_upgrade(session, event)

    def _change(self, request: StatusChangeRequest, action: str) -> CertificateStatus:
        caller = self.auth.caller
        domain.authorise_officer(caller, None)
        reason = (request.reason or "").strip()
        if not reason:
            raise errors.SwmsError(errors.REASON_REQUIRED, "撤销、暂停或恢复证书须填写理由", "reason")
        with self.db.transaction() as session:
            certificate = session.get(Certificate, request.certificate_number, with_for_update=True)
            if certificate is None or certificate.status == ISSUING:
                raise errors.not_found("证书", "certificate_number")
            domain.authorise_officer(caller, certificate)
            certificate = domain.change_status(session, certificate, action, caller, reason, self.keys.id_hash_key,
                                               _today(), utcnow())
        return CertificateStatus(certificate_number=certificate.certificate_number, status=certificate.status,
                                 reason=certificate.status_reason, changed_by=certificate.status_changed_by,
                                 changed_at=certificate.status_changed_at)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(StatusChangeRequest, CertificateStatus)
    def revoke_certificate(self, request: StatusChangeRequest):
        """撤销: final. Officers of the certificate's region (any level) or admins, with a reason."""
        return self._change(request, "revoke")

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(StatusChangeRequest, CertificateStatus)
    def suspend_certificate(self, request: StatusChangeRequest):
        """暂停: until lifted. Officers of the certificate's region or admins, with a reason."""
        return self._change(request, "suspend")

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(StatusChangeRequest, CertificateStatus)
    def reinstate_certificate(self, request: StatusChangeRequest):
        """恢复: lifts a suspension (not past the validity). Officers of the region or admins, with a reason."""
        return self._change(request, "reinstate")

    # ---- 查看证书 ---------------------------------------------------------------------------------

    def _owner(self, application_id: str):
        certificate = domain.find_for_application(self.db.session, application_id)
        request = self.db.session.get(IssueRequest, application_id)
        owner = certificate or request
        self.auth.require_person(owner.person_id if owner else "",
                                 officer_region=owner.region_code if owner else None)
        return certificate, request

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(CertificateRequest, CertificateView)
    def view_certificate(self, request: CertificateRequest):
        """查看证书: a short-lived download link for the holder or an officer of their region; an
        administrator states why (audited before the link is handed out)."""
        certificate, issue = self._owner(request.application_id)
        caller = self.auth.caller
        if caller.role == ADMIN and not (request.access_reason or "").strip():
            raise errors.validation_error(ACCESS_REASON, ADMIN_READ_NEEDS_REASON)
        if caller.role == ADMIN and certificate is not None:
            with self.db.transaction() as session:
                audit.read_by_admin(session, caller.subject, "view_certificate", "certificate",
                                    certificate.certificate_number, request.access_reason,
                                    application_id=request.application_id)
        if certificate is None or certificate.status == ISSUING:
            if issue is not None and issue.status == FAILED:
                raise errors.SwmsError(errors.CERTIFICATE_NOT_ISSUED, f"证书未能签发：{issue.last_error}",
                                       "application_id", [{"code": issue.last_error_code,
                                                           "field": issue.last_error_field,
                                                           "message": issue.last_error}])
            if issue is not None:
                raise errors.SwmsError(errors.CERTIFICATE_NOT_READY, "证书正在制作中，请稍后再试", "application_id")
            raise errors.not_found("证书", "application_id")
        url = self.storage.download_url(certificate.object_key, DOWNLOAD_LINK_SECONDS,
                                        f"{certificate.certificate_number}.pdf")
        settings = issuing.Settings.from_config(self.config)
        return CertificateView(
            certificate_number=certificate.certificate_number, application_id=certificate.application_id,
            person_id=certificate.person_id, holder_name=certificate.holder_name, level=certificate.level,
            authority=certificate.authority, valid_from=certificate.valid_from,
            valid_until=certificate.valid_until, issued_at=certificate.issued_at, status=certificate.status,
            sha256=certificate.sha256, download_url=url, download_expires_in_seconds=DOWNLOAD_LINK_SECONDS,
            kind=certificate.kind, issued_on=certificate.issued_on, status_reason=certificate.status_reason,
            pending_upgrade_level=certificate.pending_upgrade_level, supersedes=certificate.supersedes,
            superseded_by=certificate.superseded_by, original_certificate_no=certificate.original_certificate_no,
            verification_url=issuing.verification_url(settings.verify_base_url, self.keys, certificate),
            photo_missing=certificate.photo_missing,
            credential_download_url=None if certificate.status_list is None else self.storage.download_url(
                issuing.credential_key(certificate.object_key), DOWNLOAD_LINK_SECONDS,
                f"{certificate.certificate_number}.vc.jwt"))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(IssuanceStatusRequest, IssuanceStatus)
    def get_issuance_status(self, request: IssuanceStatusRequest):
        """Where the issue of an approved application stands, and why it is late or refused."""
        _, issue = self._owner(request.application_id)
        if issue is None:
            raise errors.not_found("签发记录", "application_id")
        return IssuanceStatus(application_id=issue.application_id, status=issue.status, attempts=issue.attempts,
                              certificate_number=issue.certificate_number, last_error_code=issue.last_error_code,
                              last_error_field=issue.last_error_field, last_error=issue.last_error,
                              next_attempt_at=issue.next_attempt_at if issue.status == "pending" else None,
                              received_at=issue.received_at)

    # ---- public verification --------------------------------------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(VerifyRequest, VerificationResult)
    def verify_certificate(self, request: VerifyRequest):
        """Anyone: genuine or not, and current / suspended / revoked / expired / superseded, with the
        reason; minimal data only. By the QR code's signed token, or by certificate number together
        with the holder's full name. Rate-limited per client address, and lookups by number also in
        all (the QR token cannot be walked, so a flood of numbers never stops QR verification)."""
        by_number = request.token is None
        per_address, all_by_number = verify_limits(self.config)
        limits = [(throttle.key(self.keys, per_address, self.client_ip or UNKNOWN_ADDRESS), per_address)]
        if by_number:
            limits.append((f"{all_by_number.scope}:all", all_by_number))
        now = utcnow()
        with self.db.transaction() as session:   # its own short transaction: the counters' row locks end here
            throttle.take(session, limits, now, "certificate_number" if by_number else "token")
        number = request.certificate_number
        if not by_number:
            try:
                number = tokens.read_token(self.keys.qr_public_key, request.token)
            except tokens.ForgedToken:
                raise errors.SwmsError(errors.VERIFICATION_TOKEN_FORGED,
                                       "核验码无效：不是本系统签发的证书，或二维码内容被篡改", "token") from None
        return domain.verify(self.db.session, number, request.holder_name if by_number else None, _today(), now)

    @timer(interval=3600)
    def purge_throttles(self):
        """Counters of addresses not seen for a day go (their window and lock ended long ago)."""
        with self.db.transaction() as session:
            throttle.purge(session, utcnow())

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, SigningCertificates)
    def get_signing_certificates(self):
        """Anyone: the authority's signing certificate and chain (to check PDFs) and the QR-token key."""
        material = self.keys.signing
        return SigningCertificates(
            signing_certificate_pem=material.cert_pem.decode(), chain_pem=material.chain_pem.decode(),
            signer_fingerprint=material.fingerprint, qr_token_public_key_pem=tokens.public_pem(self.keys.qr_private_pem),
            development_keys="signing" in self.keys.dev_keys_used,
            issuer_did=credentials.did_web(issuing.Settings.from_config(self.config).verify_base_url))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(StatusListRequest, StatusListCredential)
    def get_status_list(self, request: StatusListRequest):
        """Anyone: one status list as a signed BitstringStatusListCredential, as it stands now (the
        gateway publishes it at /status/v1/<purpose>/<list number>, docs/trust.md)."""
        purpose = request.purpose.value
        found = status_lists.published(self.db.session, purpose, request.list_number)
        if found is None:
            raise errors.not_found("状态列表", "list_number")
        bits, version, updated_at = found
        base = issuing.Settings.from_config(self.config).verify_base_url
        credential = credentials.status_list_credential(base, purpose, request.list_number, bits, updated_at)
        return StatusListCredential(
            purpose=purpose, list_number=request.list_number, version=version,
            updated_at=updated_at.replace(tzinfo=dt.UTC),
            credential=credentials.sign_credential(self.keys.qr_private_pem, credentials.did_web(base), credential))

