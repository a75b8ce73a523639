"""Development credentials: the token-signing key pair, the ID-hash key, and one service token per service.

Production supplies these as secrets (see docs/operations.md); this only creates what is missing,
so reruns keep earlier keys. ``python -m swms.devkeys var/keys``
"""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from swms.auth import SERVICE, Caller, generate_keypair, issue_token

SERVICES = ("identity", "profile", "registration", "review", "certificate", "notification")


def ensure_dev_keys(directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / "token-signing.pem"
    public_path = directory / "token-signing.pub.pem"
    if not private_path.exists():
        private_pem, public_pem = generate_keypair()
        private_path.write_bytes(private_pem)
        private_path.chmod(0o600)
        public_path.write_bytes(public_pem)
    # The keyed hash of ID numbers has its own key: rotating the token key must not change hashes.
    id_hash_path = directory / "id-hash.key"
    if not id_hash_path.exists():
        import secrets
        id_hash_path.write_text(secrets.token_hex(32))
        id_hash_path.chmod(0o600)
    # Encrypts webhook signing secrets at rest (notification, WEBHOOK_SECRETS_KEY_FILE): a Fernet key.
    webhook_path = directory / "webhook-secrets.key"
    if not webhook_path.exists():
        from cryptography.fernet import Fernet
        webhook_path.write_bytes(Fernet.generate_key())
        webhook_path.chmod(0o600)
    private_pem = private_path.read_bytes()
    for name in SERVICES:
        token_path = directory / f"{name}.service-token"
        if not token_path.exists():
            token, _ = issue_token(private_pem, Caller(subject=name, role=SERVICE), dt.timedelta(days=365))
            token_path.write_text(token)
            token_path.chmod(0o600)
    return directory


if __name__ == "__main__":
    print(ensure_dev_keys(sys.argv[1] if len(sys.argv) > 1 else "var/keys"))
