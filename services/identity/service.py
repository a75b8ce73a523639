"""Identity: exam-passer registry, sign-up, login, token issuing. Entrypoints stay thin."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from eventlet import tpool
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc

from services.identity import domain
from services.identity.models import Account, Passer, outbox
from swms import errors, health, idcard
from swms.auth import SOCIAL_WORKER, Auth, Caller, issue_token
from swms.config import required
from swms.contracts.common import HealthResponse
from swms.contracts.identity import (
    CheckPasserRequest,
    CheckPasserResponse,
    LoginRequest,
    PersonRequest,
    PersonResponse,
    SignUpRequest,
    SignUpResponse,
    TokenResponse,
)
from swms.db import Database
from swms.outbox import OutboxRelay
from swms.rpc import contract


class TokenSigner(DependencyProvider):
    """Holds identity's private signing key (no other service has it)."""

    def setup(self):
        config = self.container.config
        self.private_key = Path(required(config, "AUTH_PRIVATE_KEY_FILE")).read_bytes()
        self.ttl = dt.timedelta(minutes=int(config.get("TOKEN_TTL_MINUTES", 120)))

    def get_dependency(self, worker_ctx):
        return lambda caller: issue_token(self.private_key, caller, self.ttl)


class IdentityService:
    name = "identity"

    config = Config()
    db = Database()
    auth = Auth()
    sign_token = TokenSigner()
    relay = OutboxRelay(outbox)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(CheckPasserRequest, CheckPasserResponse)
    def check_passer(self, request: CheckPasserRequest):
        passer = domain.find_passer(self.db.session, request.name, request.id_number)
        return CheckPasserResponse(level=passer.level, management_number=passer.management_number,
                                   exam_year=passer.exam_year)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(SignUpRequest, SignUpResponse)
    def sign_up(self, request: SignUpRequest):
        # argon2 is deliberately slow: hash in a native thread so the hub keeps serving others.
        password_hash = tpool.execute(domain.password_hasher.hash, request.password)
        with self.db.transaction() as session:
            account = domain.sign_up(session, request.name, request.id_number, request.email, password_hash)
            passer = session.get(Passer, account.passer_id)
        return SignUpResponse(person_id=account.person_id, name=account.name,
                              id_number_masked=idcard.mask(account.id_number), level=passer.level,
                              management_number=passer.management_number)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(LoginRequest, TokenResponse)
    def login(self, request: LoginRequest):
        account = domain.find_account_for_login(self.db.session, request.login)
        # Verify even when no account matched, so timing does not reveal which accounts exist.
        stored = account.password_hash if account else domain.DUMMY_HASH
        if not tpool.execute(domain.verify_password, stored, request.password) or account is None:
            raise errors.SwmsError(errors.LOGIN_FAILED, "账号或密码错误", "login")
        caller = Caller(subject=account.person_id, role=account.role, region_code=account.region_code,
                        level=account.officer_level)
        token, expires = self.sign_token(caller)
        return TokenResponse(access_token=token, expires_at=expires, subject=account.person_id,
                             role=account.role)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(PersonRequest, PersonResponse)
    def get_person(self, request: PersonRequest):
        self.auth.require_person(request.person_id)
        account = self.db.session.get(Account, request.person_id)
        if account is None or account.role != SOCIAL_WORKER:
            raise errors.not_found("人员", "person_id")
        passer = self.db.session.get(Passer, account.passer_id)
        return PersonResponse(person_id=account.person_id, name=account.name, id_number=account.id_number,
                              email=account.email, level=passer.level,
                              management_number=passer.management_number, exam_year=passer.exam_year)
