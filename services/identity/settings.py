"""Identity's policy knobs and secrets, read once from the service config (CLI: the same file).

The keyed hash (HMAC-SHA256) turns a resident ID number, a login or a client address into a
stable pseudonym for throttle keys and audit entries. Its key comes from ``ID_HASH_KEY_FILE``
(a secret file); when that is not set, from the token-signing private key, with HKDF and a label
of its own so that neither use weakens the other.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from swms.config import Number, Numbers, required
from swms.throttle import Limit  # noqa: F401  (re-exported: identity's limits are declared here)

_HKDF_INFO = b"swms-identity keyed hash v1"


@dataclass(frozen=True)
class Settings:
    hash_key: bytes
    password_min_length: int = 10
    refresh_ttl: dt.timedelta = dt.timedelta(hours=12)
    reset_ttl: dt.timedelta = dt.timedelta(minutes=15)
    reset_max_attempts: int = 5
    confirm_ttl: dt.timedelta = dt.timedelta(hours=24)   # the email confirmation code (max attempts: as reset)
    proof_max_bytes: int = 5 * 1024 * 1024
    login_account: Limit = Limit("login", 5, dt.timedelta(minutes=15), dt.timedelta(minutes=15))
    login_source: Limit = Limit("login-src", 30, dt.timedelta(minutes=15), dt.timedelta(minutes=15))
    # Verification lookups (check_passer / sign_up): wrong names per ID number, misses per source.
    lookup_id: Limit = Limit("lookup-id", 10, dt.timedelta(hours=1), dt.timedelta(hours=1))
    lookup_source: Limit = Limit("lookup-src", 60, dt.timedelta(minutes=15), dt.timedelta(minutes=15))
    # Password-reset requests: each one counts (a mail is sent), per login and per source.
    reset_login: Limit = Limit("reset", 5, dt.timedelta(hours=1), dt.timedelta(hours=1))
    reset_source: Limit = Limit("reset-src", 20, dt.timedelta(hours=1), dt.timedelta(hours=1))
    # New email confirmation codes asked for, per account (each one sends a mail).
    confirm_account: Limit = Limit("confirm", 5, dt.timedelta(hours=1), dt.timedelta(hours=1))
    # Feedback submissions per source.
    feedback_source: Limit = Limit("feedback-src", 10, dt.timedelta(hours=1), dt.timedelta(hours=1))
    # 反馈 status lookups by the submitter: misses (unknown id or wrong ID number) per client address
    # and per feedback id, so neither ids nor the ID number behind a known id can be walked.
    feedback_status_source: Limit = Limit("fb-status-src", 20, dt.timedelta(hours=1), dt.timedelta(hours=1))
    feedback_status_id: Limit = Limit("fb-status-id", 10, dt.timedelta(hours=1), dt.timedelta(hours=1))

    def keyed_hash(self, purpose: str, value: str) -> str:
        """HMAC-SHA256 (hex) of ``value`` under this deployment's key, separated by purpose."""
        return hmac.new(self.hash_key, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()

    def id_hash(self, id_number: str) -> str:
        """Pseudonym of a resident ID number, for audit entries and joins (never the number)."""
        return self.keyed_hash("id-number", id_number.upper())


def derive_hash_key(material: bytes) -> bytes:
    if len(material) < 32:
        raise RuntimeError("the keyed-hash secret must hold at least 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(material)


NUMBERS = Numbers("identity", {
    "TOKEN_TTL_MINUTES": Number(15, 1, 1440),
    "REFRESH_TOKEN_TTL_HOURS": Number(12, 0.1, 24 * 90, whole=False),
    "PASSWORD_MIN_LENGTH": Number(10, 8, 128),            # 128: the longest password the contract accepts
    "LOGIN_MAX_FAILURES": Number(5, 1, 1000),
    "LOGIN_SOURCE_MAX_FAILURES": Number(30, 1, 100_000),
    "LOGIN_LOCK_MINUTES": Number(15, 1, 1440),
    "RESET_CODE_TTL_MINUTES": Number(15, 1, 1440, whole=False),
    "FEEDBACK_PROOF_MAX_BYTES": Number(5 * 1024 * 1024, 1024, 50 * 1024 * 1024),
})


def from_config(config: dict[str, Any]) -> Settings:
    key_file = config.get("ID_HASH_KEY_FILE") or required(config, "AUTH_PRIVATE_KEY_FILE")
    number = functools.partial(NUMBERS.get, config)
    lock = dt.timedelta(minutes=number("LOGIN_LOCK_MINUTES"))
    return Settings(
        hash_key=derive_hash_key(Path(key_file).read_bytes()),
        password_min_length=number("PASSWORD_MIN_LENGTH"),
        refresh_ttl=dt.timedelta(hours=number("REFRESH_TOKEN_TTL_HOURS")),
        reset_ttl=dt.timedelta(minutes=number("RESET_CODE_TTL_MINUTES")),
        proof_max_bytes=number("FEEDBACK_PROOF_MAX_BYTES"),
        login_account=Limit("login", number("LOGIN_MAX_FAILURES"), lock, lock),
        login_source=Limit("login-src", number("LOGIN_SOURCE_MAX_FAILURES"), lock, lock),
    )
