"""What others check without calling us (docs/trust.md): W3C Bitstring Status Lists, the
certificate as a W3C Verifiable Credential (VC Data Model 2.0 secured with VC-JOSE: a compact JWS,
EdDSA/Ed25519, ``typ: vc+jwt``), the issuer's ``did:web`` identifier, and the compact signed form
the PDF's QR code carries (QR token v2).

Every signature here is made with the QR-token key, the Ed25519 key the trust anchor publishes
(``/.well-known/swms/qr-token-key.jwk`` and the DID document ``/.well-known/did.json``).
Plain functions over bytes and dicts: no database, no broker.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import hashlib
import io
import json
import re
import urllib.parse
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# The spec's minimum (16 KB of bits), for herd privacy: one list hides each holder among 131072.
LIST_ENTRIES = 131_072
# A list takes new certificates until half its entries are used: a random free index is then found
# in two tries on average, and every list still hides each holder among ~65 000 others.
LIST_FILL = LIST_ENTRIES // 2
PURPOSES = ("revocation", "suspension")
STATUS_PATH = "/status/v1"                  # + /<purpose>/<list number>, served by the gateway
VC_MEDIA_TYPE = "application/vc+jwt"
CHINA = dt.timezone(dt.timedelta(hours=8))  # the PDF's dates are dates in China
QR_TYPE = "swms-qr+jwt"
VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
LEVEL_DIGITS = {"助理社会工作师": "1", "社会工作师": "2", "高级社会工作师": "3"}
DIGIT_LEVELS = {digit: level for level, digit in LEVEL_DIGITS.items()}


class BadSignature(ValueError):
    """Not a JWS made with this key (altered, truncated, another key, or malformed)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text or ""):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(raw) != text:   # only the canonical spelling (the last character's spare bits)
        raise ValueError("non-canonical base64url")
    return raw


# ---- bitstrings ----------------------------------------------------------------------------------

def empty_bits(entries: int = LIST_ENTRIES) -> bytes:
    return bytes(entries // 8)


def with_bit(bits: bytes, index: int, value: bool) -> bytes:
    """Index 0 is the left-most (most significant) bit of the first byte, as the spec says."""
    if not 0 <= index < len(bits) * 8:
        raise IndexError(index)
    changed = bytearray(bits)
    mask = 0x80 >> (index % 8)
    changed[index // 8] = (changed[index // 8] | mask) if value else (changed[index // 8] & ~mask)
    return bytes(changed)


def bit(bits: bytes, index: int) -> bool:
    if not 0 <= index < len(bits) * 8:
        raise IndexError(index)
    return bool(bits[index // 8] & (0x80 >> (index % 8)))


def encode_list(bits: bytes) -> str:
    """``encodedList``: multibase (``u``) base64url, no padding, of the GZIP-compressed bits.
    mtime 0: the same bits always give the same text (and the same ETag)."""
    return "u" + b64url(gzip.compress(bits, compresslevel=6, mtime=0))


def decode_list(encoded: str, limit: int = 16 * 1024 * 1024) -> bytes:
    if not isinstance(encoded, str) or not encoded.startswith("u"):
        raise ValueError("encodedList must start with 'u' (multibase base64url)")
    with gzip.GzipFile(fileobj=io.BytesIO(unb64url(encoded[1:]))) as stream:
        bits = stream.read(limit + 1)
    if len(bits) > limit:
        raise ValueError("status list too large")
    return bits


# ---- JWS (compact, EdDSA) ------------------------------------------------------------------------

def _private(private_key_pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def jwk_of(public_key: Ed25519PublicKey) -> dict[str, str]:
    """RFC 8037 OKP key with its RFC 7638 thumbprint as ``kid`` (what the gateway publishes)."""
    x = b64url(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    thumbprint = hashlib.sha256(json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"),
                                           sort_keys=True).encode()).digest()
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": b64url(thumbprint), "use": "sig", "alg": "EdDSA"}


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def sign_jws(private_key_pem: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    signing_input = f"{b64url(_compact_json(header))}.{b64url(_compact_json(payload))}"
    return f"{signing_input}.{b64url(_private(private_key_pem).sign(signing_input.encode('ascii')))}"


def read_jws(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, payload, signing input, signature) — unchecked; ``BadSignature`` if malformed."""
    parts = token.strip().split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise BadSignature("not a compact JWS")
    try:
        header, payload = json.loads(unb64url(parts[0])), json.loads(unb64url(parts[1]))
        signature = unb64url(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadSignature("malformed") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise BadSignature("malformed")
    return header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def verify_jws(public_key: Ed25519PublicKey, token: str, typ: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, signing_input, signature = read_jws(token)
    if header.get("alg") != "EdDSA" or header.get("typ") != typ or "crit" in header:
        raise BadSignature("unexpected header")
    try:
        public_key.verify(signature, signing_input)
    except InvalidSignature:
        raise BadSignature("bad signature") from None
    return header, payload


# ---- did:web and the published URLs ---------------------------------------------------------------

def public_origin(verify_base_url: str) -> str:
    """scheme://host[:port] of VERIFY_BASE_URL: the gateway's public address."""
    parts = urllib.parse.urlsplit(verify_base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"VERIFY_BASE_URL {verify_base_url!r} is not an http(s) URL")
    return f"{parts.scheme}://{parts.netloc}"


def did_web(verify_base_url: str) -> str:
    """did:web:<host> (a port is written %3A, as the did:web method says)."""
    host = urllib.parse.urlsplit(verify_base_url).netloc.lower()
    return "did:web:" + host.replace(":", "%3A")


def did_document_url(did: str, allow_http: bool = False) -> str:
    """Where a did:web document lives (host only: /.well-known/did.json)."""
    if not did.startswith("did:web:") or ":" in did[len("did:web:"):]:
        raise ValueError(f"{did!r} is not a host-only did:web")
    host = urllib.parse.unquote(did[len("did:web:"):])
    return f"{'http' if allow_http else 'https'}://{host}/.well-known/did.json"


def key_id(did: str, public_key: Ed25519PublicKey) -> str:
    return f"{did}#{jwk_of(public_key)['kid']}"


def did_document(did: str, public_key: Ed25519PublicKey) -> dict[str, Any]:
    jwk = jwk_of(public_key)
    method = f"{did}#{jwk['kid']}"
    return {"@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/jwk/v1"],
            "id": did,
            "verificationMethod": [{"id": method, "type": "JsonWebKey", "controller": did,
                                    "publicKeyJwk": {k: jwk[k] for k in ("kty", "crv", "x")}}],
            "assertionMethod": [method], "authentication": [method]}


def status_list_url(verify_base_url: str, purpose: str, list_number: int) -> str:
    return f"{public_origin(verify_base_url)}{STATUS_PATH}/{purpose}/{list_number}"


# ---- the status list credential -------------------------------------------------------------------

def _instant(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def status_list_credential(verify_base_url: str, purpose: str, list_number: int, bits: bytes,
                           updated_at: dt.datetime) -> dict[str, Any]:
    url = status_list_url(verify_base_url, purpose, list_number)
    return {"@context": [VC_CONTEXT], "id": url, "type": ["VerifiableCredential", "BitstringStatusListCredential"],
            "issuer": did_web(verify_base_url), "validFrom": _instant(updated_at),
            "credentialSubject": {"id": f"{url}#list", "type": "BitstringStatusList", "statusPurpose": purpose,
                                  "encodedList": encode_list(bits)}}


def sign_credential(private_key_pem: bytes, did: str, credential: dict[str, Any]) -> str:
    """VC-JOSE: the credential itself is the JWS payload; ``typ: vc+jwt``, ``cty: vc``."""
    public = _private(private_key_pem).public_key()
    return sign_jws(private_key_pem, {"alg": "EdDSA", "typ": "vc+jwt", "cty": "vc", "kid": key_id(did, public)},
                    credential)


# ---- the certificate as a credential --------------------------------------------------------------

def status_entries(verify_base_url: str, list_number: int, index: int) -> list[dict[str, str]]:
    entries = []
    for purpose in PURPOSES:
        url = status_list_url(verify_base_url, purpose, list_number)
        entries.append({"id": f"{url}#{index}", "type": "BitstringStatusListEntry", "statusPurpose": purpose,
                        "statusListIndex": str(index), "statusListCredential": url})
    return entries


def validity(valid_from: dt.date, valid_until: dt.date) -> tuple[str, str]:
    """The PDF's validity, first day to last day inclusive, in China's time."""
    start = dt.datetime.combine(valid_from, dt.time(0, 0, 0), CHINA)
    end = dt.datetime.combine(valid_until, dt.time(23, 59, 59), CHINA)
    return start.isoformat(), end.isoformat()


def certificate_credential(*, verify_base_url: str, certificate_number: str, holder_name: str, level: str,
                           authority: str, valid_from: dt.date, valid_until: dt.date, id_number_hash: str,
                           id_number_hash_key_id: str, list_number: int, index: int) -> dict[str, Any]:
    start, end = validity(valid_from, valid_until)
    return {
        "@context": [VC_CONTEXT],
        "id": f"urn:swms:certificate:{certificate_number}",
        "type": ["VerifiableCredential", "SocialWorkerRegistrationCredential"],
        "name": "社会工作者职业水平电子登记证书",
        "issuer": {"id": did_web(verify_base_url), "name": authority},
        "validFrom": start, "validUntil": end,
        "credentialSubject": {
            "type": "RegisteredSocialWorker", "name": holder_name, "level": level,
            "certificateNumber": certificate_number,
            # HMAC-SHA256 of the ID number with the ID-hash key given to authorised agencies (the
            # same value as the events' id_number_hash): they match it, nobody else can reverse it.
            "idNumberHash": {"algorithm": "HMAC-SHA256", "keyId": id_number_hash_key_id, "value": id_number_hash},
        },
        "credentialStatus": status_entries(verify_base_url, list_number, index),
    }


# ---- QR token v2: the compact signed form the PDF's QR code carries ------------------------------

def make_qr_token(private_key_pem: bytes, *, certificate_number: str, holder_name_masked: str, level: str,
                  valid_from: dt.date, valid_until: dt.date, list_number: int, index: int) -> str:
    """A compact JWS a phone checks offline with the published key: number, masked name, level
    (1/2/3), validity (YYYYMMDD) and the status-list pointer (list number, index)."""
    payload = {"n": certificate_number, "m": holder_name_masked, "l": LEVEL_DIGITS.get(level, level),
               "f": valid_from.strftime("%Y%m%d"), "u": valid_until.strftime("%Y%m%d"), "s": list_number, "i": index}
    return sign_jws(private_key_pem, {"alg": "EdDSA", "typ": QR_TYPE}, payload)


def read_qr_token(public_key: Ed25519PublicKey, token: str) -> dict[str, Any]:
    """The v2 token's claims, level and dates spelled out; ``BadSignature`` if it does not check."""
    _, claims = verify_jws(public_key, token, QR_TYPE)
    number = claims.get("n")
    if not isinstance(number, str) or not re.fullmatch(r"\d{13}", number):
        raise BadSignature("no certificate number")
    try:
        return {"certificate_number": number, "holder_name_masked": str(claims["m"]),
                "level": DIGIT_LEVELS.get(str(claims["l"]), str(claims["l"])),
                "valid_from": dt.datetime.strptime(claims["f"], "%Y%m%d").date(),
                "valid_until": dt.datetime.strptime(claims["u"], "%Y%m%d").date(),
                "status_list": int(claims["s"]), "status_index": int(claims["i"])}
    except (KeyError, TypeError, ValueError):
        raise BadSignature("incomplete claims") from None
