"""The certificate service's keys: PDF signing key + certificate + chain, QR-token key, ID-hash key.

Production supplies each as a file (``CERT_SIGNING_KEY_PATH`` …, docs/configuration.md) and sets
``CERT_ALLOW_DEV_KEYS=false``, so that a missing file stops the service at start-up instead of
silently signing with a development key. Otherwise whatever is not supplied is generated on the
first run and kept in the service's own database (table ``dev_key_material``), so that every
replica signs with the same development CA and checks the same QR tokens.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nameko.extensions import DependencyProvider
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.certificate import signing, tokens
from services.certificate.models import DevKeyMaterial
from swms.db import engine_from_config
from swms.outbox import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyRing:
    signing: signing.SigningMaterial
    qr_private_pem: bytes
    id_hash_key: bytes
    dev_keys_used: tuple[str, ...]     # which parts came from the development material

    @property
    def qr_public_key(self):
        return tokens.public_key_of(self.qr_private_pem)

    @functools.cached_property
    def _pseudonym_key(self) -> bytes:
        # Derived from the QR key, which never leaves the service (the ID-hash key goes to agencies).
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"swms-certificate pseudonyms v1").derive(self.qr_private_pem)

    def keyed_hash(self, purpose: str, value: str) -> str:
        """A stable pseudonym (HMAC-SHA256, hex) for throttle keys: a client address is never stored."""
        return hmac.new(self._pseudonym_key, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _dev_material(session: Session, authority: str) -> dict[str, str]:
    """Read the development keys, generating them the first time (one replica wins the race)."""
    rows = {row.name: row.pem for row in session.execute(select(DevKeyMaterial)).scalars()}
    if {"signing_key", "signing_cert", "signing_chain", "qr_token_key", "id_hash_key"} <= set(rows):
        return rows
    material = signing.generate_dev_ca(authority)
    fresh = {"signing_key": material.key_pem.decode(), "signing_cert": material.cert_pem.decode(),
             "signing_chain": material.chain_pem.decode(), "qr_token_key": tokens.generate_token_key().decode(),
             "id_hash_key": secrets.token_hex(32)}
    try:
        now = utcnow()
        for name, pem in fresh.items():
            if name not in rows:
                session.add(DevKeyMaterial(name=name, pem=pem, created_at=now))
        session.commit()
    except IntegrityError:
        session.rollback()  # another replica generated them at the same moment: use theirs
    rows = {row.name: row.pem for row in session.execute(select(DevKeyMaterial)).scalars()}
    log.warning("certificate: using DEVELOPMENT keys kept in the database (set CERT_SIGNING_KEY_PATH "
                "etc. and CERT_ALLOW_DEV_KEYS=false in production)")
    return rows


def load_keys(config: dict) -> KeyRing:
    def path(key: str) -> Path | None:
        value = str(config.get(key) or "").strip()
        return Path(value) if value else None

    key_path, cert_path, chain_path = (path("CERT_SIGNING_KEY_PATH"), path("CERT_SIGNING_CERT_PATH"),
                                       path("CERT_SIGNING_CHAIN_PATH"))
    qr_path, hash_path = path("CERT_QR_KEY_PATH"), path("CERT_ID_HASH_KEY_PATH")
    signing_paths = (key_path, cert_path, chain_path)
    if any(signing_paths) and not all(signing_paths):
        raise RuntimeError("CERT_SIGNING_KEY_PATH, CERT_SIGNING_CERT_PATH and CERT_SIGNING_CHAIN_PATH "
                           "go together: set all three or none")
    missing = [name for name, value in (("signing", key_path), ("qr_token", qr_path), ("id_hash", hash_path))
               if value is None]
    dev: dict[str, str] = {}
    if missing:
        if not _truthy(config.get("CERT_ALLOW_DEV_KEYS", "true")):
            raise RuntimeError(f"CERT_ALLOW_DEV_KEYS is false but no key file is configured for: {missing} "
                               "(see docs/configuration.md)")
        with sessionmaker(engine_from_config(config))() as session:
            dev = _dev_material(session, str(config.get("CERT_AUTHORITY_NAME") or "SWMS"))
    if key_path:
        material = signing.SigningMaterial(key_path.read_bytes(), cert_path.read_bytes(), chain_path.read_bytes())
    else:
        material = signing.SigningMaterial(dev["signing_key"].encode(), dev["signing_cert"].encode(),
                                           dev["signing_chain"].encode())
    signing.check_material(material)
    qr_pem = qr_path.read_bytes() if qr_path else dev["qr_token_key"].encode()
    tokens.public_key_of(qr_pem)  # fails now if it is not an Ed25519 private key
    hash_key = hash_path.read_bytes().strip() if hash_path else dev["id_hash_key"].encode()
    if len(hash_key) < 32:
        raise RuntimeError("the ID-hash key (CERT_ID_HASH_KEY_PATH) must be at least 32 bytes")
    return KeyRing(material, qr_pem, hash_key, tuple(missing))


class CertificateKeys(DependencyProvider):
    """Loads the key ring once per container, at start-up (a bad key stops the service there)."""

    def setup(self):
        self.keys = load_keys(self.container.config)

    def get_dependency(self, worker_ctx):
        return self.keys
