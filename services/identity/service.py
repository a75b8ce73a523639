"""Identity: exam-passer registry, sign-up, login and tokens, password reset, 反馈 (feedback),
and the contact lookups notification needs. Entrypoints stay thin: parse, authorise, domain, reply.

Slow work (argon2) runs in native threads and never inside a database transaction: under eventlet
a transaction held across it would hold SQLite's write lock for every other worker.
"""
from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from eventlet import tpool
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from sqlalchemy.orm import sessionmaker

from services.identity import domain, passwords
from services.identity import feedback as feedback_rules
from services.identity import settings as identity_settings
from services.identity.models import Account, Feedback, Passer, audit, outbox, throttle
from swms import errors, health, idcard
from swms.auth import ADMIN, OFFICER, SERVICE, SOCIAL_WORKER, Auth, Caller, issue_token
from swms.config import required
from swms.contracts.common import HealthResponse
from swms.contracts.identity import (
    AccountState,
    AccountStatusRequest,
    Acknowledged,
    CheckPasserRequest,
    CheckPasserResponse,
    Contact,
    EmailConfirm,
    EmailConfirmationMessage,
    EmailConfirmationRef,
    EmailConfirmationStarted,
    EmailConfirmed,
    FeedbackDecisionRequest,
    FeedbackDetail,
    FeedbackItem,
    FeedbackPage,
    FeedbackQuery,
    FeedbackReceipt,
    FeedbackRef,
    FeedbackRequest,
    FeedbackStatusAnswer,
    FeedbackStatusRequest,
    LoginRequest,
    OfficerContacts,
    OfficerContactsRequest,
    PasswordResetConfirm,
    PasswordResetMessage,
    PasswordResetRef,
    PasswordResetStart,
    PasswordResetStarted,
    PersonRequest,
    PersonResponse,
    ProofLink,
    RefreshRequest,
    SignUpRequest,
    SignUpResponse,
    TokenResponse,
)
from swms.background import BackgroundLoop
from swms.db import Database, engine_from_config
from swms.ops import OpsEndpoint
from swms.outbox import OutboxRelay, utcnow
from swms.rpc import contract, rpc
from swms.settings import CheckedNumbers
from swms.storage import ObjectStorage, bucket_from_config, make_s3_client
from swms.throttle import ClientAddress

log = logging.getLogger(__name__)

PROOF_LINK_SECONDS = 300


class TokenSigner(DependencyProvider):
    """Holds identity's private signing key (no other service has it)."""

    def setup(self):
        config = self.container.config
        self.private_key = Path(required(config, "AUTH_PRIVATE_KEY_FILE")).read_bytes()
        self.ttl = dt.timedelta(minutes=identity_settings.NUMBERS.get(config, "TOKEN_TTL_MINUTES"))

    def get_dependency(self, worker_ctx):
        return lambda caller: issue_token(self.private_key, caller, self.ttl)


class IdentitySettings(DependencyProvider):
    """Policy and the keyed-hash secret, read once at start (a missing secret stops the service)."""

    def setup(self):
        self.settings = identity_settings.from_config(self.container.config)

    def get_dependency(self, worker_ctx):
        return self.settings


class ProofStorage(ObjectStorage):
    """The 反馈 proof bucket. Identity must start, answer health checks and serve logins while
    object storage is away (only proof uploads and links need it): its client gives up quickly
    (2 attempts, 2 s to connect) instead of swms.storage's 5 patient attempts, a failed bucket
    check at start is only logged, and the health RPC reports it."""

    def setup(self):
        config = self.container.config
        client = make_s3_client(config, attempts=2, connect_timeout=2)
        self.bucket = bucket_from_config(config, self.bucket_key, client)
        try:
            self.bucket.ensure_exists()
        except Exception as exc:
            log.warning("object storage not reachable at start (%s); proof uploads will retry", type(exc).__name__)


class OrphanProofSweeper(BackgroundLoop):
    """Hourly: proof files left without their feedback by a crash (feedback.sweep_orphan_proofs)."""
    poll_seconds = 3600.0
    older_than = dt.timedelta(hours=24)

    def setup(self):
        super().setup()
        config = self.container.config
        self.sessions = sessionmaker(engine_from_config(config))
        self.bucket = bucket_from_config(config, "IDENTITY_S3_BUCKET")

    def run_once(self) -> int:
        with self.sessions() as session:
            return len(feedback_rules.sweep_orphan_proofs(session, self.bucket, self.older_than))


def _own_account(session, caller: Caller) -> Account:
    """The signed-in social worker's account (a token can outlive a deleted account)."""
    account = session.get(Account, caller.subject)
    if account is None:
        raise errors.not_found("账号", "person_id")
    return account


def put_proof(bucket, key: str, body: bytes, content_type: str, metadata: dict) -> str:
    """Store a proof file; a bucket missing (storage was away at start) is created first. Storage
    out of reach is UPSTREAM_UNAVAILABLE for the caller (retry later), not an internal error."""
    try:
        try:
            return bucket.put(key, body, content_type, metadata)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
                raise
            bucket.ensure_exists()
            return bucket.put(key, body, content_type, metadata)
    except (BotoCoreError, ClientError) as exc:
        log.warning("proof upload failed: %s", type(exc).__name__)
        raise errors.SwmsError(errors.UPSTREAM_UNAVAILABLE, "文件存储暂不可用，请稍后重试", "proof") from None


def _caller_of(account: Account) -> Caller:
    return Caller(subject=account.person_id, role=account.role, region_code=account.region_code,
                  level=account.officer_level)


def _feedback_item(item: Feedback) -> FeedbackItem:
    return FeedbackItem(feedback_id=item.feedback_id, status=item.status, name=item.name,
                        id_number_masked=idcard.mask(item.id_number), level=item.level, exam_year=item.exam_year,
                        management_number=item.management_number, region_code=item.region_code,
                        has_proof=item.proof_key is not None, submitted_at=item.submitted_at,
                        decided_by=item.decided_by, decided_at=item.decided_at, reason=item.reason)


def _masked_login(login: str) -> str:
    """The login an administrator typed, as it may be shown back: 110***********1239, l***@example.cn."""
    login = domain.normalise_login(login)
    if "@" in login:
        local, _, host = login.partition("@")
        return f"{local[:1]}***@{host}"
    return idcard.mask(login)


def _account_state(account: Account, login: str, changed: bool) -> AccountState:
    return AccountState(person_id=account.person_id, login_masked=_masked_login(login), role=account.role,
                        disabled=account.disabled_at is not None, disabled_at=account.disabled_at,
                        disabled_reason=account.disabled_reason, changed=changed)


class IdentityService:
    name = "identity"

    config = Config()
    numbers = CheckedNumbers(identity_settings.NUMBERS)   # every numeric setting checked before anything starts
    db = Database()
    auth = Auth()
    sign_token = TokenSigner()
    settings = IdentitySettings()
    client_ip = ClientAddress()
    storage = ProofStorage("IDENTITY_S3_BUCKET")
    orphan_proofs = OrphanProofSweeper()
    relay = OutboxRelay(outbox)
    ops = OpsEndpoint(outbox)   # /healthz, /readyz, /metrics on OPS_PORT, for this process

    def _transaction(self, work, reads: bool = False):
        """Run ``work(session)`` in one transaction (``reads``: work that only reads, given the
        Connection of :meth:`swms.db.DatabaseAccess.reads` instead of a session). If it fails with an error that carries
        ``on_failure`` actions (rate-limit counters, revocations), run those in a transaction of
        their own after the rollback, then re-raise."""
        try:
            with (self.db.reads() if reads else self.db.transaction()) as session:
                return work(session)
        except errors.SwmsError as exc:
            actions = getattr(exc, "on_failure", None)
            if actions:
                with self.db.transaction() as session:
                    for action in actions:
                        action(session)
            raise

    def _tokens(self, account: Account, refresh: tuple[str, dt.datetime]) -> TokenResponse:
        token, expires = self.sign_token(_caller_of(account))
        return TokenResponse(access_token=token, expires_at=expires, subject=account.person_id,
                             role=account.role, refresh_token=refresh[0], refresh_expires_at=refresh[1])

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db, self.storage, process=self.ops)

    # ---- registry and sign-up ------------------------------------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(CheckPasserRequest, CheckPasserResponse)
    def check_passer(self, request: CheckPasserRequest):
        # Only reads (the throttle's check and the lookup); a miss is counted in a transaction after.
        passer = self._transaction(lambda session: domain.verify_passer(
            session, self.settings, request.name, request.id_number, self.client_ip, utcnow()), reads=True)
        return CheckPasserResponse(level=passer.level, management_number=passer.management_number,
                                   exam_year=passer.exam_year)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(SignUpRequest, SignUpResponse)
    def sign_up(self, request: SignUpRequest):
        # Cheap checks first (registry, one account per person), then the strength rule, then the
        # deliberately slow hash outside any transaction, then the account in one transaction.
        def verify(session):
            passer = domain.verify_passer(session, self.settings, request.name, request.id_number,
                                          self.client_ip, utcnow())
            domain.check_not_registered(session, passer, request.email)

        self._transaction(verify)
        passwords.check(request.password, self.settings.password_min_length, id_number=request.id_number,
                        email=request.email)
        password_hash = tpool.execute(passwords.hasher.hash, request.password)

        def create(session):
            account = domain.sign_up(session, self.settings, request.name, request.id_number, request.email,
                                     password_hash, self.client_ip)
            return account, session.get(Passer, account.passer_id)

        account, passer = self._transaction(create)
        return SignUpResponse(person_id=account.person_id, name=account.name,
                              id_number_masked=idcard.mask(account.id_number), level=passer.level,
                              management_number=passer.management_number)

    # ---- login and tokens ------------------------------------------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(LoginRequest, TokenResponse)
    def login(self, request: LoginRequest):
        now = utcnow()
        session = self.db.session
        account = domain.find_account_for_login(session, request.login)
        keys = domain.login_keys(self.settings, account, request.login, self.client_ip)
        try:
            throttle.check(session, [key for key, _ in keys], now, "login")
        finally:
            session.commit()   # no transaction stays open across the slow hash below (reads only)
        # Verify even when no account matched, so timing does not reveal which accounts exist.
        stored = account.password_hash if account else passwords.DUMMY_HASH
        if not tpool.execute(passwords.verify, stored, request.password) or account is None:
            with self.db.transaction() as session:
                domain.login_failed(session, self.settings, keys, account, request.login, self.client_ip, now)
            raise errors.SwmsError(errors.LOGIN_FAILED, "账号或密码错误", "login")
        new_hash = None
        if passwords.hasher.check_needs_rehash(account.password_hash):
            new_hash = tpool.execute(passwords.hasher.hash, request.password)
        refresh = self._transaction(
            lambda session: domain.login_succeeded(session, self.settings, account, keys, now, new_hash))
        return self._tokens(account, refresh)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(RefreshRequest, TokenResponse)
    def refresh(self, request: RefreshRequest):
        """A new access token (and the next refresh token) for an unspent, unexpired refresh token."""
        account, token, expires = self._transaction(
            lambda session: domain.use_refresh_token(session, self.settings, request.refresh_token, utcnow()))
        return self._tokens(account, (token, expires))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(RefreshRequest, Acknowledged)
    def logout(self, request: RefreshRequest):
        """Revokes the refresh token and every token refreshed from the same login."""
        with self.db.transaction() as session:
            domain.revoke_refresh_token(session, request.refresh_token, utcnow())
        return Acknowledged(ok=True, message="已退出登录")

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PasswordResetStart, PasswordResetStarted)
    def request_password_reset(self, request: PasswordResetStart):
        """Emails a one-time code to the account's address (same answer whether or not it exists)."""
        self._transaction(lambda session: domain.request_password_reset(
            session, self.settings, request.login, self.client_ip, utcnow()))
        minutes = int(self.settings.reset_ttl.total_seconds() // 60)
        return PasswordResetStarted(message=f"若该账号存在，验证码已发送至其注册邮箱，{minutes} 分钟内有效",
                                    expires_in_seconds=int(self.settings.reset_ttl.total_seconds()))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PasswordResetConfirm, Acknowledged)
    def reset_password(self, request: PasswordResetConfirm):
        now = utcnow()
        session = self.db.session
        account = domain.find_account_for_login(session, request.login)
        session.commit()   # reads only; nothing stays open across the slow hash below
        passwords.check(request.new_password, self.settings.password_min_length, field="new_password",
                        id_number=account.id_number if account else None, email=account.email if account else None)
        reset = self._transaction(lambda s: domain.check_reset_code(s, self.settings, account, request.code, now))
        new_hash = tpool.execute(passwords.hasher.hash, request.new_password)
        self._transaction(lambda s: domain.complete_password_reset(s, self.settings, account, reset, new_hash, now))
        return Acknowledged(ok=True, message="密码已重置，请使用新密码登录")

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, EmailConfirmationStarted)
    def request_email_confirmation(self):
        """The signed-in holder: a new code to the account's address (one is also sent at sign-up)."""
        caller = self.auth.require(SOCIAL_WORKER)

        self._transaction(lambda session: domain.request_email_confirmation(
            session, self.settings, _own_account(session, caller), utcnow()))
        hours = int(self.settings.confirm_ttl.total_seconds() // 3600)
        return EmailConfirmationStarted(message=f"验证码已发送至您的注册邮箱，{hours} 小时内有效",
                                        expires_in_seconds=int(self.settings.confirm_ttl.total_seconds()))

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(EmailConfirm, EmailConfirmed)
    def confirm_email(self, request: EmailConfirm):
        """The signed-in holder types the mailed code: the address is confirmed (password-reset
        codes are sent only to a confirmed address)."""
        caller = self.auth.require(SOCIAL_WORKER)
        now = utcnow()

        def work(session):
            account = _own_account(session, caller)
            domain.confirm_email(session, self.settings, account, request.code, now)
            return account.email

        return EmailConfirmed(email=self._transaction(work), confirmed_at=now)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PersonRequest, PersonResponse)
    def get_person(self, request: PersonRequest):
        caller = self.auth.require_reader(request.person_id, None, request.access_reason)
        account = self.db.session.get(Account, request.person_id)
        if account is None or account.role != SOCIAL_WORKER:
            raise errors.not_found("人员", "person_id")
        if caller.role == ADMIN:
            with self.db.transaction() as session:
                audit.read_by_admin(session, caller.subject, "get_person", "account", request.person_id,
                                    request.access_reason)
        passer = self.db.session.get(Passer, account.passer_id)
        return PersonResponse(person_id=account.person_id, name=account.name, id_number=account.id_number,
                              email=account.email, email_confirmed=account.email_confirmed_at is not None,
                              level=passer.level,
                              management_number=passer.management_number, exam_year=passer.exam_year)

    # ---- administrators: disabling an account ------------------------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(AccountStatusRequest, AccountState)
    def disable_account(self, request: AccountStatusRequest):
        """Admin: the account can no longer log in, refresh or reset its password; its refresh
        tokens and pending reset codes are revoked now (an access token already issued lives until
        it expires). Audited with the administrator as actor. Already disabled: ``changed`` false."""
        caller = self.auth.require(ADMIN)

        def work(session):
            account = domain.find_account_for_login(session, request.login)
            if account is not None and account.person_id == caller.subject:
                raise errors.SwmsError(errors.INVALID_STATE, "不能停用自己的账号", "login")
            return domain.disable_account(session, request.login, request.reason, utcnow(), caller.subject)

        account, changed = self._transaction(work)
        return _account_state(account, request.login, changed)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(AccountStatusRequest, AccountState)
    def enable_account(self, request: AccountStatusRequest):
        """Admin: a disabled account may log in again; audited with the reason. Not disabled:
        ``changed`` false."""
        caller = self.auth.require(ADMIN)
        account, changed = self._transaction(lambda session: domain.enable_account(
            session, request.login, caller.subject, request.reason))
        return _account_state(account, request.login, changed)

    # ---- 反馈 (feedback) ------------------------------------------------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(FeedbackRequest, FeedbackReceipt)
    def submit_feedback(self, request: FeedbackRequest):
        """Anyone: a person not found in the registry asks to be added (optional proof file)."""
        now = utcnow()
        proof = feedback_rules.decode_proof(request, self.settings.proof_max_bytes)
        source_key = (throttle.key(self.settings, self.settings.feedback_source, self.client_ip)
                      if self.client_ip else None)
        with self.db.transaction() as session:
            if source_key:
                throttle.check(session, [source_key], now, "payload")
            feedback_rules.precheck(session, request.id_number, request.level.value)
        feedback_id = feedback_rules.new_id()
        key = digest = None
        if proof is not None:
            key = feedback_rules.proof_key_for(feedback_id, proof)
            digest = put_proof(self.storage, key, proof.body, proof.content_type, {"feedback-id": feedback_id})
        try:
            def store(session):
                item = feedback_rules.submit(session, self.settings, request, feedback_id, proof, key, digest, now)
                if source_key:
                    throttle.record_failure(session, source_key, self.settings.feedback_source, now)
                return item

            item = self._transaction(store)
        except BaseException:
            if key is not None:   # nothing stored half-way: no orphan proof in the bucket
                try:
                    self.storage.delete(key)
                except Exception:
                    log.exception("could not delete the proof of feedback %s", feedback_id)
            raise
        return FeedbackReceipt(feedback_id=item.feedback_id, status=item.status, submitted_at=item.submitted_at)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(FeedbackStatusRequest, FeedbackStatusAnswer)
    def get_feedback_status(self, request: FeedbackStatusRequest):
        """Anyone: the submitter follows their 反馈 with the receipt's id and their ID number (both
        must match; misses are limited per client address and per id). The reason only if rejected."""
        item = self._transaction(lambda session: feedback_rules.status_for_submitter(
            session, self.settings, request.feedback_id, request.id_number, self.client_ip, utcnow()))
        rejected = item.status == feedback_rules.REJECTED
        return FeedbackStatusAnswer(feedback_id=item.feedback_id, status=item.status, submitted_at=item.submitted_at,
                                    decided_at=item.decided_at, reason=item.reason if rejected else None)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(FeedbackQuery, FeedbackPage)
    def list_feedback(self, request: FeedbackQuery):
        """Officers: feedback of their jurisdiction (admins: all), oldest first; ID numbers masked."""
        caller = self.auth.require(OFFICER, ADMIN)
        items, total = feedback_rules.listing(self.db.session, caller, request.status.value, request.page,
                                              request.page_size)
        return FeedbackPage(items=[_feedback_item(item) for item in items], page=request.page,
                            page_size=request.page_size, total=total)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(FeedbackRef, FeedbackDetail)
    def get_feedback(self, request: FeedbackRef):
        """Officers of the feedback's region: the full feedback and a short-lived proof link (audited)."""
        caller = self.auth.require(OFFICER, ADMIN)
        with self.db.transaction() as session:
            item = feedback_rules.load_for(session, caller, request.feedback_id)
            feedback_rules.opened(session, self.settings, caller, item)
        proof = None
        if item.proof_key:
            proof = ProofLink(filename=item.proof_filename, content_type=item.proof_content_type,
                              size=item.proof_size, sha256=item.proof_sha256,
                              url=self.storage.download_url(item.proof_key, PROOF_LINK_SECONDS, None),
                              expires_in_seconds=PROOF_LINK_SECONDS)
        return FeedbackDetail(**_feedback_item(item).model_dump(), id_number=item.id_number, email=item.email,
                              note=item.note, proof=proof)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(FeedbackDecisionRequest, FeedbackItem)
    def decide_feedback(self, request: FeedbackDecisionRequest):
        """Officers of the feedback's region: approve (the person joins the registry) or reject."""
        caller = self.auth.require(OFFICER, ADMIN)
        with self.db.transaction() as session:
            item = feedback_rules.decide(session, self.settings, caller, request.feedback_id, request.decision,
                                         request.reason, request.management_number, utcnow())
        return _feedback_item(item)

    # ---- service-only lookups for notification (addresses and codes never ride the bus) -----------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(FeedbackRef, Contact)
    def get_feedback_contact(self, request: FeedbackRef):
        self.auth.require(SERVICE)
        item, person_id = feedback_rules.contact(self.db.session, request.feedback_id)
        return Contact(person_id=person_id, name=item.name, email=item.email)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PasswordResetRef, PasswordResetMessage)
    def get_password_reset_message(self, request: PasswordResetRef):
        """The code of a live reset (pending, not expired); INVALID_STATE once used, replaced or expired."""
        caller = self.auth.require(SERVICE)
        with self.db.transaction() as session:
            account, reset, code = domain.password_reset_message(session, self.settings, request.reset_id,
                                                                 utcnow(), caller.subject)
        return PasswordResetMessage(person_id=account.person_id, name=account.name, email=account.email,
                                    code=code, expires_at=reset.expires_at)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(EmailConfirmationRef, EmailConfirmationMessage)
    def get_email_confirmation_message(self, request: EmailConfirmationRef):
        """Notification only: the code of a live confirmation; INVALID_STATE once used, replaced or expired."""
        caller = self.auth.require(SERVICE)
        with self.db.transaction() as session:
            account, confirmation, code = domain.email_confirmation_message(
                session, self.settings, request.confirmation_id, utcnow(), caller.subject)
        return EmailConfirmationMessage(person_id=account.person_id, name=account.name, email=confirmation.email,
                                        code=code, expires_at=confirmation.expires_at)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(OfficerContactsRequest, OfficerContacts)
    def list_officer_contacts(self, request: OfficerContactsRequest):
        self.auth.require(SERVICE)
        officers = domain.officer_contacts(self.db.session, request.region_code, request.level)
        return OfficerContacts(items=[Contact(person_id=o.person_id, name=o.name, email=o.email) for o in officers])
