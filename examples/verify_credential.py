#!/usr/bin/env python3
"""Checks an SWMS certificate credential (``<number>.vc.jwt``, downloaded beside the PDF) the way
any outside verifier can: with nothing from SWMS but its public URLs (docs/trust.md).

  python examples/verify_credential.py 1120262000001.vc.jwt
  python examples/verify_credential.py https://example.org/1120262000001.vc.jwt

Three answers, as OpenCerts gives them:

* integrity: the credential is a VC-JOSE compact JWS (EdDSA, ``typ: vc+jwt``) whose signature
  checks with the key its ``kid`` names in the issuer's DID document;
* status: within ``validFrom``/``validUntil``, and neither bit set in the revocation and
  suspension lists its ``credentialStatus`` points at (each list a signed
  BitstringStatusListCredential of the same issuer). A list that cannot be fetched or checked
  makes the answer "could not check", never "valid";
* issuer identity: ``did:web:<host>`` resolved at ``https://<host>/.well-known/did.json`` lists
  the signing key as an assertion method; the host is who vouches.

Exit code 0: all three valid; 1: something is invalid (tampered, revoked, suspended, expired);
2: nothing invalid, but something could not be checked. Needs only ``cryptography``.
``--allow-http`` resolves did:web over plain HTTP (tests on loopback only).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import gzip
import io
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

VALID, INVALID, UNCHECKED = "valid", "invalid", "could not check"
WORDS = {VALID: "通过 valid", INVALID: "不通过 invalid", UNCHECKED: "无法核验 could not check"}
STATUS_WORDS = {VALID: "有效 valid", UNCHECKED: "无法核验 could not check"}   # invalid: the detail says which
MAX_DOWNLOAD = 4 * 1024 * 1024
CLOCK_SKEW = dt.timedelta(minutes=5)   # a list just updated may be dated a moment ahead of our clock


class Invalid(Exception):
    """Checked, and wrong."""


class Unchecked(Exception):
    """Could not be checked (a URL did not answer, or answered something unusable)."""


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fetch(url: str, allow_http: bool, timeout: float) -> bytes:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme != "https" and not (allow_http and scheme == "http"):
        raise Unchecked(f"refusing to fetch {url} (not https)")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "*/*"}), timeout=timeout) as answer:
            body = answer.read(MAX_DOWNLOAD + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unchecked(f"{url}: {exc}") from None
    if len(body) > MAX_DOWNLOAD:
        raise Unchecked(f"{url}: too large")
    return body


def parse_jws(token: str) -> tuple[dict, dict, bytes, bytes]:
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise Invalid("not a compact JWS")
    try:
        header, payload = json.loads(unb64url(parts[0])), json.loads(unb64url(parts[1]))
        signature = unb64url(parts[2])
    except ValueError:
        raise Invalid("malformed JWS") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise Invalid("malformed JWS")
    if header.get("alg") != "EdDSA" or header.get("typ") != "vc+jwt" or "crit" in header:
        raise Invalid(f"unexpected JWS header {header}")
    return header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


def did_document_url(did: str, allow_http: bool) -> str:
    if not did.startswith("did:web:") or ":" in did[len("did:web:"):]:
        raise Invalid(f"issuer {did!r} is not a host-only did:web")
    host = urllib.parse.unquote(did[len("did:web:"):])
    return f"{'http' if allow_http else 'https'}://{host}/.well-known/did.json"


class Resolver:
    """did:web documents, fetched once per run."""

    def __init__(self, allow_http: bool, timeout: float):
        self.allow_http, self.timeout, self.documents = allow_http, timeout, {}
        self.signature_seconds = 0.0   # the Ed25519 checks alone, without the fetches

    def key(self, kid: str) -> Ed25519PublicKey:
        did = kid.split("#", 1)[0]
        if did not in self.documents:
            try:
                self.documents[did] = json.loads(fetch(did_document_url(did, self.allow_http), self.allow_http,
                                                       self.timeout))
            except ValueError:
                raise Unchecked(f"the DID document of {did} is not JSON") from None
        document = self.documents[did]
        if document.get("id") != did:
            raise Invalid(f"the DID document at {did} names {document.get('id')!r}")
        methods = {method.get("id"): method for method in document.get("verificationMethod", [])}
        assertion = [item if isinstance(item, str) else item.get("id") for item in document.get("assertionMethod", [])]
        if kid not in methods or kid not in assertion:
            raise Invalid(f"{kid} is not an assertion key of {did}")
        jwk = methods[kid].get("publicKeyJwk") or {}
        if (jwk.get("kty"), jwk.get("crv")) != ("OKP", "Ed25519"):
            raise Invalid(f"{kid} is not an Ed25519 key")
        return Ed25519PublicKey.from_public_bytes(unb64url(jwk["x"]))

    def verify(self, token: str, issuer: str) -> dict:
        """The payload of a JWS signed by ``issuer``'s key (Invalid / Unchecked otherwise)."""
        header, payload, signing_input, signature = parse_jws(token)
        kid = str(header.get("kid", ""))
        if kid.split("#", 1)[0] != issuer:
            raise Invalid(f"signed by {kid!r}, not by the issuer {issuer!r}")
        key = self.key(kid)
        started = time.perf_counter()
        try:
            key.verify(signature, signing_input)
        except InvalidSignature:
            raise Invalid("the signature does not match the content: altered, or not signed by this key") from None
        finally:
            self.signature_seconds += time.perf_counter() - started
        return payload


def issuer_of(credential: dict) -> str:
    issuer = credential.get("issuer")
    return issuer.get("id", "") if isinstance(issuer, dict) else str(issuer or "")


def instant(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("no time zone")
    return value


def check_dates(credential: dict, now: dt.datetime, skew: dt.timedelta = dt.timedelta(0)) -> str | None:
    """None when ``now`` is within the validity (``skew`` allowed before validFrom), else why not."""
    try:
        start = instant(credential["validFrom"]) if "validFrom" in credential else None
        end = instant(credential["validUntil"]) if "validUntil" in credential else None
    except (TypeError, ValueError):
        raise Invalid("validFrom/validUntil are not dates") from None
    if start is not None and now + skew < start:
        return f"尚未生效 not yet valid (validFrom {credential['validFrom']})"
    if end is not None and now > end:
        return f"已过期 expired (validUntil {credential['validUntil']})"
    return None


def status_bit(resolver: Resolver, entry: dict, issuer: str, now: dt.datetime, timeout: float) -> bool:
    """The entry's bit in its list (True: set), the list checked as the spec says."""
    if entry.get("type") != "BitstringStatusListEntry":
        raise Unchecked(f"unknown status type {entry.get('type')!r}")
    url, purpose = entry.get("statusListCredential", ""), entry.get("statusPurpose")
    try:
        index = int(entry.get("statusListIndex"))
    except (TypeError, ValueError):
        raise Invalid("statusListIndex is not a number") from None
    try:
        status_list = resolver.verify(fetch(url, resolver.allow_http, timeout).decode("ascii"), issuer)
    except (Invalid, UnicodeDecodeError) as exc:
        raise Unchecked(f"the status list {url} does not check: {exc}") from None   # ours is not trusted either
    subject = status_list.get("credentialSubject") or {}
    if ("BitstringStatusListCredential" not in status_list.get("type", []) or status_list.get("id") != url
            or subject.get("statusPurpose") != purpose):
        raise Unchecked(f"{url} is not the {purpose} list it should be")
    if check_dates(status_list, dt.datetime.now(dt.UTC), CLOCK_SKEW) is not None:
        raise Unchecked(f"the status list {url} is outside its validity")
    encoded = subject.get("encodedList", "")
    try:
        if not encoded.startswith("u"):
            raise ValueError("no multibase prefix")
        with gzip.GzipFile(fileobj=io.BytesIO(unb64url(encoded[1:]))) as stream:
            bits = stream.read(MAX_DOWNLOAD + 1)
    except (OSError, ValueError, EOFError):
        raise Unchecked(f"the status list {url} cannot be decoded") from None
    if len(bits) < 16 * 1024 or not 0 <= index < len(bits) * 8:
        raise Unchecked(f"the status list {url} is too short for index {index}")
    return bool(bits[index // 8] & (0x80 >> (index % 8)))


def verify(token: str, allow_http: bool = False, timeout: float = 10.0, now: dt.datetime | None = None) -> dict:
    """{"integrity", "status", "issuer": (verdict, detail)}, plus the credential when readable."""
    now = now or dt.datetime.now(dt.UTC)
    resolver = Resolver(allow_http, timeout)
    answers = {"integrity": (UNCHECKED, ""), "status": (UNCHECKED, "not checked"), "issuer": (UNCHECKED, "")}
    try:
        _, credential, _, _ = parse_jws(token)
    except Invalid as exc:
        answers["integrity"] = (INVALID, str(exc))
        answers["issuer"] = (INVALID, "unreadable")
        answers["status"] = (UNCHECKED, "not checked: the credential is unreadable")
        return answers
    issuer = issuer_of(credential)
    answers["credential"] = credential
    try:
        resolver.verify(token, issuer)
        answers["integrity"] = (VALID, "the signature matches the content")
        answers["issuer"] = (VALID, f"{issuer} ({(credential.get('issuer') or {}).get('name', '')}), "
                                    f"key published at {did_document_url(issuer, allow_http)}")
    except Invalid as exc:
        answers["integrity"] = (INVALID, str(exc))
        answers["issuer"] = (INVALID, f"{issuer}: the credential is not signed by a key it publishes")
        answers["status"] = (UNCHECKED, "not checked: the credential failed its integrity check")
        return answers
    except Unchecked as exc:
        answers["integrity"] = answers["issuer"] = (UNCHECKED, str(exc))
        return answers
    try:
        why = check_dates(credential, now)
    except Invalid as exc:
        answers["status"] = (INVALID, f"不通过 invalid — {exc}")
        return answers
    if why is not None:
        answers["status"] = (INVALID, why)
        return answers
    entries = credential.get("credentialStatus") or []
    entries = entries if isinstance(entries, list) else [entries]
    if not entries:
        answers["status"] = (UNCHECKED, "the credential names no status list")
        return answers
    found, unchecked = [], []
    for entry in entries:
        try:
            if status_bit(resolver, entry, issuer, now, timeout):
                found.append(entry.get("statusPurpose"))
        except (Unchecked, Invalid) as exc:
            unchecked.append(str(exc))
    if "revocation" in found:
        answers["status"] = (INVALID, "已撤销 revoked")
    elif "suspension" in found:
        answers["status"] = (INVALID, "已暂停 suspended")
    elif unchecked:
        answers["status"] = (UNCHECKED, "; ".join(unchecked))
    else:
        answers["status"] = (VALID, f"not revoked, not suspended, valid until {credential.get('validUntil')}")
    answers["signature_ms"] = resolver.signature_seconds * 1000
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("credential", help="a .vc.jwt file, or an https URL of one")
    parser.add_argument("--allow-http", action="store_true", help="resolve over plain HTTP (loopback tests)")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.credential.startswith(("https://", "http://")):
            token = fetch(args.credential, args.allow_http, args.timeout).decode("ascii")
        else:
            with open(args.credential, encoding="ascii") as file:
                token = file.read()
    except (OSError, UnicodeDecodeError, Unchecked) as exc:
        print(f"cannot read the credential: {exc}", file=sys.stderr)
        return 2
    answers = verify(token, args.allow_http, args.timeout)
    elapsed = (time.perf_counter() - started) * 1000
    subject = (answers.get("credential") or {}).get("credentialSubject") or {}
    if subject:
        print(f"证书 certificate: {subject.get('certificateNumber')} {subject.get('name')} {subject.get('level')}")
    verdict, detail = answers["integrity"]
    print(f"完整性 integrity: {WORDS[verdict]} — {detail}")
    verdict, detail = answers["status"]
    print(f"状态 status: {detail if verdict == INVALID else STATUS_WORDS[verdict] + ' — ' + detail}")
    verdict, detail = answers["issuer"]
    print(f"签发者 issuer identity: {WORDS[verdict]} — {detail}")
    signature = answers.get("signature_ms")
    print(f"VC verification time: {elapsed:.1f} ms in all (fetches included)"
          + (f", Ed25519 checks (credential + lists) {signature:.2f} ms" if signature is not None else ""))
    verdicts = [answers[name][0] for name in ("integrity", "status", "issuer")]
    if INVALID in verdicts:
        return 1
    return 2 if UNCHECKED in verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
