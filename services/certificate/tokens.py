"""The QR verification token and the keyed hash of ID numbers for agencies.

QR token: ``<certificate number>.<Ed25519 signature, base64url>`` over ``swms-cert-v1:<number>``.
Printed in the certificate's QR code as ``<VERIFY_BASE_URL>?t=<token>``. Anyone holding the
public key (``certificate.get_signing_certificates``) can check a token offline; only this
service can make one, so a made-up or altered token is recognised as forged.

ID hash: HMAC-SHA256 over ``swms-id-v1:<18-character ID number, upper-case X>`` with a secret
key that the operators give to authorised agencies. Events carry this instead of the ID number:
an agency that knows a person's ID number computes the same value and matches, nobody else can
reverse it (the ID number space is small enough to brute-force a plain hash).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from services.certificate import credentials

TOKEN_CONTEXT = b"swms-cert-v1:"
ID_HASH_CONTEXT = b"swms-id-v1:"
_TOKEN_SHAPE = re.compile(r"^(\d{13})\.([A-Za-z0-9_-]{86})$")


class ForgedToken(ValueError):
    """The token was not made by this service's key (made up, altered, truncated, or malformed)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_token(private_key_pem: bytes, certificate_number: str) -> str:
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return f"{certificate_number}.{_b64(key.sign(TOKEN_CONTEXT + certificate_number.encode('ascii')))}"


def read_token(public_key: Ed25519PublicKey, token: str) -> str:
    """The certificate number the token vouches for; ``ForgedToken`` if it does not check out.
    Both spellings: v1 ``<number>.<signature>`` and v2, the compact JWS of credentials.py."""
    if isinstance(token, str) and token.count(".") == 2:
        try:
            return credentials.read_qr_token(public_key, token)["certificate_number"]
        except credentials.BadSignature:
            raise ForgedToken("bad signature") from None
    match = _TOKEN_SHAPE.match(token.strip()) if isinstance(token, str) else None
    if match is None:
        raise ForgedToken("malformed")
    number, signature = match.groups()
    try:
        raw = base64.urlsafe_b64decode(signature + "==")
        if _b64(raw) != signature:  # the last character's spare bits: only the canonical spelling counts
            raise ValueError("non-canonical encoding")
        public_key.verify(raw, TOKEN_CONTEXT + number.encode("ascii"))
    except (InvalidSignature, binascii.Error, ValueError):
        raise ForgedToken("bad signature") from None
    return number


def public_key_of(private_key_pem: bytes) -> Ed25519PublicKey:
    return serialization.load_pem_private_key(private_key_pem, password=None).public_key()


def public_pem(private_key_pem: bytes) -> str:
    return public_key_of(private_key_pem).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def generate_token_key() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def id_hash(key: bytes, id_number: str) -> str:
    return hmac.new(key, ID_HASH_CONTEXT + id_number.strip().upper().encode("ascii"), hashlib.sha256).hexdigest()


def id_hash_key_id(key: bytes) -> str:
    """Names the key (first 16 hex digits of its SHA-256) so that agencies notice a rotation."""
    return hashlib.sha256(key).hexdigest()[:16]
