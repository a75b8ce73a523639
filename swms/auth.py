"""Tokens: identity signs (Ed25519 / JWT "EdDSA"); every service verifies locally.

Only identity holds the private key; the other services hold the public key, so a compromised
service cannot mint tokens. Callers pass the token in Nameko context data under ``auth_token``
(AMQP header ``nameko.auth_token``); Nameko forwards context data on onward RPC calls, so a
service calling another on a user's behalf acts with that user's rights.

Work that no user started (an event handler fetching data from another service) uses the
service's own token (``SERVICE_TOKEN_FILE``, role ``service``), minted by identity's CLI.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nameko.extensions import DependencyProvider

from swms import errors
from swms.config import required

ISSUER = "swms-identity"
AUDIENCE = "swms"
CONTEXT_KEY = "auth_token"
ACCESS_REASON = "access_reason"    # request field: why an administrator reads a person's data
ADMIN_READ_NEEDS_REASON = "管理员查看他人个人信息须填写查询事由（如工单号），每次查看均记入审计日志"

SOCIAL_WORKER = "social_worker"
OFFICER = "officer"
ADMIN = "admin"
SERVICE = "service"
ROLES = (SOCIAL_WORKER, OFFICER, ADMIN, SERVICE)

COUNTY, CITY, PROVINCE = "county", "city", "province"
OFFICER_LEVELS = (COUNTY, CITY, PROVINCE)


@dataclass(frozen=True)
class Caller:
    subject: str                # person id, officer id, or service name
    role: str
    region_code: str | None = None   # officers: 6-digit GB/T 2260 code of their jurisdiction
    level: str | None = None         # officers: county / city / province

    def covers_region(self, county_code: str) -> bool:
        """Whether an officer's jurisdiction contains the 6-digit county code."""
        if self.role != OFFICER or not self.region_code or not county_code:
            return False
        prefix = {PROVINCE: 2, CITY: 4, COUNTY: 6}[self.level]
        return county_code[:prefix] == self.region_code[:prefix]


def generate_keypair() -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


def key_id(public_key_pem: bytes) -> str:
    """Short fingerprint of a public key; tokens name the key that signed them (JWT header "kid")."""
    import hashlib

    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    raw = load_pem_public_key(public_key_pem).public_bytes(serialization.Encoding.Raw,
                                                             serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_keys(pem_bundle: bytes) -> dict[str, bytes]:
    """One or more PEM public keys (concatenated): several during a key rotation."""
    marker = b"-----END PUBLIC KEY-----"
    keys = {}
    for chunk in pem_bundle.split(marker):
        if b"-----BEGIN PUBLIC KEY-----" in chunk:
            pem = chunk[chunk.index(b"-----BEGIN"):] + marker + b"\n"
            keys[key_id(pem)] = pem
    if not keys:
        raise RuntimeError("AUTH_PUBLIC_KEY_FILE holds no PEM public key")
    return keys


def issue_token(private_key_pem: bytes, caller: Caller, ttl: dt.timedelta) -> tuple[str, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    expires = now + ttl
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": caller.subject, "role": caller.role,
              "iat": now, "exp": expires, "jti": uuid.uuid4().hex}
    if caller.region_code:
        claims["region"] = caller.region_code
    if caller.level:
        claims["lvl"] = caller.level
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    public_pem = load_pem_private_key(private_key_pem, None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    headers = {"kid": key_id(public_pem)}
    return jwt.encode(claims, private_key_pem, algorithm="EdDSA", headers=headers), expires


def verify_token(public_keys: bytes | dict[str, bytes], token: str) -> Caller:
    """``public_keys``: a PEM bundle or {kid: pem}; the token's "kid" picks the key."""
    if not isinstance(token, str) or not token:
        raise errors.auth_required()
    keys = load_public_keys(public_keys) if isinstance(public_keys, bytes) else public_keys
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        public_key_pem = keys.get(kid) if kid else next(iter(keys.values())) if len(keys) == 1 else None
        if public_key_pem is None:
            raise jwt.InvalidTokenError("unknown signing key")
        claims = jwt.decode(token, public_key_pem, algorithms=["EdDSA"], audience=AUDIENCE,
                            issuer=ISSUER, options={"require": ["exp", "sub", "iss", "aud"]})
    except jwt.ExpiredSignatureError:
        raise errors.SwmsError(errors.TOKEN_EXPIRED, "登录已过期，请重新登录", CONTEXT_KEY) from None
    except jwt.PyJWTError:
        raise errors.SwmsError(errors.TOKEN_INVALID, "登录凭证无效", CONTEXT_KEY) from None
    role = claims.get("role")
    if role not in ROLES:
        raise errors.SwmsError(errors.TOKEN_INVALID, "登录凭证无效", CONTEXT_KEY)
    return Caller(subject=claims["sub"], role=role, region_code=claims.get("region"),
                  level=claims.get("lvl"))


class AuthContext:
    def __init__(self, worker_ctx, public_key: dict[str, bytes], service_token: str | None):
        self._worker_ctx = worker_ctx
        self._public_key = public_key
        self._service_token = service_token
        self._caller: Caller | None = None

    @property
    def caller(self) -> Caller:
        if self._caller is None:
            token = self._worker_ctx.context_data.get(CONTEXT_KEY)
            if not token:
                raise errors.auth_required()
            self._caller = verify_token(self._public_key, token)
        return self._caller

    def require(self, *roles: str) -> Caller:
        caller = self.caller
        if roles and caller.role not in roles:
            raise errors.forbidden()
        return caller

    def require_person(self, person_id: str, officer_region: str | None = None) -> Caller:
        """The person themself, a service, an admin, or (if ``officer_region`` is given) an officer
        whose jurisdiction covers that county code."""
        caller = self.caller
        if caller.role in (SERVICE, ADMIN):
            return caller
        if caller.role == SOCIAL_WORKER and caller.subject == person_id:
            return caller
        if officer_region is not None and caller.covers_region(officer_region):
            return caller
        raise errors.forbidden("无权查看或修改他人的信息")

    def require_reader(self, person_id: str, officer_region: str | None, access_reason: str | None) -> Caller:
        """Who may read a person's 个人信息表 and applications: the person, a service, officers whose
        jurisdiction covers ``officer_region``, and administrators, for support only: read-only
        (no write accepts them) and with a stated ``access_reason``, which the caller then audits
        (``AuditLog.read_by_admin``) before answering."""
        caller = self.require_person(person_id, officer_region)
        if caller.role == ADMIN and not (access_reason or "").strip():
            raise errors.validation_error(ACCESS_REASON, ADMIN_READ_NEEDS_REASON)
        return caller

    def act_as_service(self) -> None:
        """Make onward RPC calls from this worker carry the service's own token."""
        if not self._service_token:
            raise RuntimeError("SERVICE_TOKEN_FILE is not configured for this service")
        # WorkerContext.context_data is a copy; outgoing headers are built from .data.
        self._worker_ctx.data[CONTEXT_KEY] = self._service_token


class Auth(DependencyProvider):
    def setup(self):
        config = self.container.config
        self.public_key = load_public_keys(Path(required(config, "AUTH_PUBLIC_KEY_FILE")).read_bytes())
        token_file = config.get("SERVICE_TOKEN_FILE")
        self.service_token = Path(token_file).read_text().strip() if token_file and Path(token_file).exists() else None

    def get_dependency(self, worker_ctx):
        return AuthContext(worker_ctx, self.public_key, self.service_token)
