"""Identity's policy knobs and secrets, read once from the service config (CLI: the same file).

The keyed hash (HMAC-SHA256) turns a resident ID number, a login or a client address into a
stable pseudonym for throttle keys and audit entries. Its key comes from ``ID_HASH_KEY_FILE``
(a secret file); when that is not set, from the token-signing private key, with HKDF and a label
of its own so that neither use weakens the other.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from swms.config import required
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


def from_config(config: dict[str, Any]) -> Settings:
    key_file = config.get("ID_HASH_KEY_FILE") or required(config, "AUTH_PRIVATE_KEY_FILE")
    lock = dt.timedelta(minutes=int(config.get("LOGIN_LOCK_MINUTES", 15)))
    defaults = Settings(hash_key=b"")
    return Settings(
        hash_key=derive_hash_key(Path(key_file).read_bytes()),
        password_min_length=max(8, int(config.get("PASSWORD_MIN_LENGTH", 10))),
        refresh_ttl=dt.timedelta(hours=float(config.get("REFRESH_TOKEN_TTL_HOURS", 12))),
        reset_ttl=dt.timedelta(minutes=float(config.get("RESET_CODE_TTL_MINUTES", 15))),
        proof_max_bytes=int(config.get("FEEDBACK_PROOF_MAX_BYTES", defaults.proof_max_bytes)),
        login_account=Limit("login", int(config.get("LOGIN_MAX_FAILURES", 5)), lock, lock),
        login_source=Limit("login-src", int(config.get("LOGIN_SOURCE_MAX_FAILURES", 30)), lock, lock),
    )
