"""Status lists, the credential and the v2 QR token without a broker (docs/trust.md): bitstring
encoding as the W3C spec says, random allocation, the bits following every lifecycle change in the
same transaction, VC-JOSE signing and verification (tamper, wrong key), the example verifier's
three answers against real HTTP on loopback (status list unreachable → could not check)."""
from __future__ import annotations

import base64
import datetime as dt
import gzip
import http.server
import json
import random
import subprocess
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from services.certificate import credentials, domain, issuing, status_lists, tokens
from services.certificate.models import Certificate, StatusList
from services.gateway.public import did_document, ed25519_jwk
from swms.auth import OFFICER, Caller
from swms.contracts.common import ApplicationKind, Level
from swms.outbox import utcnow
from tests.unit.test_certificate import TODAY, issue, session  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
BASE = "https://swms.example.gov.cn/verify"
OFFICER_CALLER = Caller("officer-9", OFFICER, "110105", "county")


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    return tokens.generate_token_key()


# ---- bitstrings ----------------------------------------------------------------------------------

def test_bit_zero_is_the_left_most_bit_and_the_encoding_is_multibase_gzip_base64url():
    bits = credentials.with_bit(credentials.empty_bits(), 0, True)
    bits = credentials.with_bit(bits, 131_071, True)
    assert bits[0] == 0x80 and bits[-1] == 0x01 and len(bits) == 16 * 1024
    encoded = credentials.encode_list(bits)
    assert encoded.startswith("u") and "=" not in encoded
    raw = gzip.decompress(base64.urlsafe_b64decode(encoded[1:] + "=" * (-len(encoded[1:]) % 4)))
    assert raw == bits == credentials.decode_list(encoded)
    assert credentials.bit(bits, 0) and credentials.bit(bits, 131_071) and not credentials.bit(bits, 1)
    assert credentials.encode_list(bits) == encoded          # deterministic: same bits, same text
    assert not credentials.bit(credentials.with_bit(bits, 0, False), 0)
    with pytest.raises(IndexError):
        credentials.with_bit(bits, 131_072, True)
    with pytest.raises(ValueError):
        credentials.decode_list(encoded[1:])                 # no multibase prefix


def test_entries_are_random_unique_and_a_half_full_list_opens_the_next(session, monkeypatch):  # noqa: F811
    monkeypatch.setattr(credentials, "LIST_FILL", 3)
    picks = iter([7, 7, 7, 9, 11, 5, 7])    # 7 taken: tried again; the fourth certificate opens list 2
    rng = type("Rng", (), {"randrange": lambda self, n: next(picks)})()
    given = []
    for _ in range(4):
        entry = status_lists.allocate(session, utcnow(), rng)
        given.append(entry)
        session.add(Certificate(certificate_number=f"11202620{len(given):05d}", application_id=str(uuid.uuid4()),
                                person_id="p", status="issued", holder_name="李", id_number="1", level="社会工作师",
                                region_code="110105", authority="a", valid_from=TODAY, valid_until=TODAY,
                                object_key="k", created_at=utcnow(), status_list=entry[0], status_index=entry[1]))
        session.flush()
    assert given == [(1, 7), (1, 9), (1, 11), (2, 5)]
    assert [row.allocated for row in session.execute(select(StatusList).order_by(StatusList.list_number)).scalars()] == [3, 1]
    spread = {status_lists.allocate(session, utcnow(), random.Random(seed))[1] for seed in range(20)}
    assert len(spread) > 15 and max(spread) > 65_536   # anywhere in the 131072 entries


def bits_of(session, certificate) -> tuple[bool, bool]:
    row = session.get(StatusList, certificate.status_list, populate_existing=True)
    return (credentials.bit(row.revocation_bits, certificate.status_index),
            credentials.bit(row.suspension_bits, certificate.status_index))


def test_the_bits_follow_suspension_reinstatement_revocation_expiry_and_reissue(session):  # noqa: F811
    now = utcnow()
    certificate = issue(session)
    assert certificate.status_list == 1 and 0 <= certificate.status_index < 131_072
    assert bits_of(session, certificate) == (False, False)
    versions = lambda: (lambda row: (row.revocation_version, row.suspension_version))(  # noqa: E731
        session.get(StatusList, 1, populate_existing=True))
    before = versions()
    certificate = domain.change_status(session, certificate, "suspend", OFFICER_CALLER, "调查", b"k" * 32, TODAY, now)
    assert bits_of(session, certificate) == (False, True) and versions() == (before[0], before[1] + 1)
    certificate = domain.change_status(session, certificate, "reinstate", OFFICER_CALLER, "结束", b"k" * 32, TODAY, now)
    assert bits_of(session, certificate) == (False, False)
    certificate = domain.change_status(session, certificate, "suspend", OFFICER_CALLER, "再查", b"k" * 32, TODAY, now)
    certificate = domain.change_status(session, certificate, "revoke", OFFICER_CALLER, "欺骗", b"k" * 32, TODAY, now)
    assert bits_of(session, certificate) == (True, False)
    session.commit()
    # expiry ends a suspension (validUntil says expired); a re-issue revokes the old entry for good
    suspended = domain.change_status(session, issue(session), "suspend", OFFICER_CALLER, "查", b"k" * 32, TODAY, now)
    domain.expire_due(session, dt.date(2029, 11, 26), now, b"k" * 32)
    assert bits_of(session, session.get(Certificate, suspended.certificate_number)) == (False, False)
    person = str(uuid.uuid4())
    old = issue(session, person_id=person)
    new = issue(session, ApplicationKind.UPGRADE, person_id=person, level=Level.SENIOR)
    assert bits_of(session, session.get(Certificate, old.certificate_number)) == (True, False)
    assert bits_of(session, new) == (False, False) and new.status_index != old.status_index
    audit = session.execute(select(domain.audit.table.c.action, domain.audit.table.c.detail)).all()
    assert any(action == "certificate.revoked" and "revocation" in str(detail) for action, detail in audit)


def test_a_failed_change_leaves_the_bits_alone(session):  # noqa: F811
    certificate = issue(session)
    domain.change_status(session, certificate, "revoke", OFFICER_CALLER, "欺骗", b"k" * 32, TODAY, utcnow())
    session.rollback()   # the transaction did not commit: neither did the bit
    assert bits_of(session, session.get(Certificate, certificate.certificate_number)) == (False, False)


# ---- signatures ----------------------------------------------------------------------------------

def credential(index=94_567):
    return credentials.certificate_credential(
        verify_base_url=BASE, certificate_number="1120262000001", holder_name="李明华", level="社会工作师",
        authority="中华人民共和国民政部", valid_from=TODAY, valid_until=dt.date(2029, 11, 25),
        id_number_hash="ab" * 32, id_number_hash_key_id="0123456789abcdef", list_number=3, index=index)


def test_the_credential_is_vc_2_with_status_entries_and_no_id_number(key_pem):
    vc = credential()
    assert vc["issuer"]["id"] == "did:web:swms.example.gov.cn" and vc["@context"] == [credentials.VC_CONTEXT]
    assert (vc["validFrom"], vc["validUntil"]) == ("2026-11-26T00:00:00+08:00", "2029-11-25T23:59:59+08:00")
    assert [(e["statusPurpose"], e["statusListIndex"], e["statusListCredential"]) for e in vc["credentialStatus"]] == [
        ("revocation", "94567", "https://swms.example.gov.cn/status/v1/revocation/3"),
        ("suspension", "94567", "https://swms.example.gov.cn/status/v1/suspension/3")]
    assert set(vc["credentialSubject"]) == {"type", "name", "level", "certificateNumber", "idNumberHash"}
    token = credentials.sign_credential(key_pem, "did:web:swms.example.gov.cn", vc)
    header, payload = credentials.verify_jws(tokens.public_key_of(key_pem), token, "vc+jwt")
    assert payload == vc and header["alg"] == "EdDSA" and header["cty"] == "vc"
    assert header["kid"].startswith("did:web:swms.example.gov.cn#")


def test_a_tampered_credential_or_another_key_is_refused(key_pem):
    token = credentials.sign_credential(key_pem, "did:web:swms.example.gov.cn", credential())
    head, body, signature = token.split(".")
    altered = json.loads(credentials.unb64url(body))
    altered["credentialSubject"]["level"] = "高级社会工作师"
    forged = f"{head}.{credentials.b64url(json.dumps(altered).encode())}.{signature}"
    public = tokens.public_key_of(key_pem)
    for bad in (forged, token[:-2] + ("AA" if not token.endswith("AA") else "BB"), token + ".x", "garbage"):
        with pytest.raises(credentials.BadSignature):
            credentials.verify_jws(public, bad, "vc+jwt")
    with pytest.raises(credentials.BadSignature):
        credentials.verify_jws(Ed25519PrivateKey.generate().public_key(), token, "vc+jwt")
    with pytest.raises(credentials.BadSignature):   # a credential is not a QR token (typ checked)
        credentials.verify_jws(public, token, credentials.QR_TYPE)


def test_qr_token_v2_carries_the_facts_and_both_spellings_verify(key_pem):
    public = tokens.public_key_of(key_pem)
    token = credentials.make_qr_token(key_pem, certificate_number="1120262000001", holder_name_masked="欧阳****",
                                      level="高级社会工作师", valid_from=TODAY, valid_until=dt.date(2029, 11, 25),
                                      list_number=3, index=131_071)
    claims = credentials.read_qr_token(public, token)
    assert claims == {"certificate_number": "1120262000001", "holder_name_masked": "欧阳****",
                      "level": "高级社会工作师", "valid_from": TODAY, "valid_until": dt.date(2029, 11, 25),
                      "status_list": 3, "status_index": 131_071}
    assert tokens.read_token(public, token) == "1120262000001"
    assert tokens.read_token(public, tokens.make_token(key_pem, "1120262000001")) == "1120262000001"  # v1
    url = f"{BASE}?t={token}"
    assert len(url) < 400 and len(token) <= 600   # fits VerifyRequest and a QR code
    with pytest.raises(tokens.ForgedToken):
        tokens.read_token(Ed25519PrivateKey.generate().public_key(), token)
    # the longest name (50 characters) still fits the token's limit
    long = credentials.make_qr_token(key_pem, certificate_number="1120262000001", holder_name_masked="李" + "*" * 49,
                                     level="高级社会工作师", valid_from=TODAY, valid_until=TODAY, list_number=99,
                                     index=131_071)
    assert len(long) <= 600


def test_the_status_list_credential_and_the_did_document(key_pem):
    bits = credentials.with_bit(credentials.empty_bits(), 42, True)
    vc = credentials.status_list_credential(BASE, "revocation", 3, bits, dt.datetime(2026, 12, 3, 8, 0))
    assert vc["type"] == ["VerifiableCredential", "BitstringStatusListCredential"]
    assert vc["id"] == "https://swms.example.gov.cn/status/v1/revocation/3" and vc["validFrom"] == "2026-12-03T08:00:00Z"
    assert vc["credentialSubject"]["statusPurpose"] == "revocation"
    assert credentials.bit(credentials.decode_list(vc["credentialSubject"]["encodedList"]), 42)
    assert credentials.did_web("http://127.0.0.1:8123/verify") == "did:web:127.0.0.1%3A8123"
    assert credentials.did_document_url("did:web:127.0.0.1%3A8123", allow_http=True) == \
        "http://127.0.0.1:8123/.well-known/did.json"
    public_pem = tokens.public_pem(key_pem)
    published = did_document("did:web:swms.example.gov.cn", public_pem)   # what the gateway serves
    assert published == credentials.did_document("did:web:swms.example.gov.cn", tokens.public_key_of(key_pem))
    assert published["verificationMethod"][0]["publicKeyJwk"]["x"] == ed25519_jwk(public_pem)["x"]


# ---- the example verifier against real HTTP on loopback -------------------------------------------

@contextmanager
def publisher(key_pem: bytes, revoked: set[int], status_up: bool = True):
    """did.json and the two status lists as the gateway publishes them, on a loopback port."""
    state: dict = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            base = f"http://127.0.0.1:{state['port']}/verify"
            did = credentials.did_web(base)
            if self.path == "/.well-known/did.json":
                body = json.dumps(credentials.did_document(did, tokens.public_key_of(key_pem))).encode()
            elif self.path.startswith("/status/v1/") and status_up:
                purpose = self.path.split("/")[3]
                bits = credentials.empty_bits()
                for index in (revoked if purpose == "revocation" else ()):
                    bits = credentials.with_bit(bits, index, True)
                vc = credentials.status_list_credential(base, purpose, 3, bits, utcnow())
                body = credentials.sign_credential(key_pem, did, vc).encode()
            else:
                self.send_response(503)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["port"] = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{state['port']}/verify"
    finally:
        server.shutdown()
        server.server_close()


def run_verifier(path: Path, *extra: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, str(REPO / "examples" / "verify_credential.py"), str(path), "--allow-http",
                           *extra], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


def test_the_example_verifier_says_valid_revoked_and_could_not_check(tmp_path, key_pem):
    def signed(base: str, index: int, **dates) -> Path:
        vc = credentials.certificate_credential(
            verify_base_url=base, certificate_number="1120262000001", holder_name="李明华", level="社会工作师",
            authority="中华人民共和国民政部", valid_from=dates.get("start", TODAY),
            valid_until=dates.get("end", dt.date(2099, 1, 1)), id_number_hash="ab" * 32,
            id_number_hash_key_id="0123456789abcdef", list_number=3, index=index)
        path = tmp_path / f"{uuid.uuid4().hex}.vc.jwt"
        path.write_text(credentials.sign_credential(key_pem, credentials.did_web(base), vc))
        return path

    with publisher(key_pem, revoked={5}) as base:
        code, out = run_verifier(signed(base, 4))
        assert code == 0, out
        assert "完整性 integrity: 通过 valid" in out and "状态 status: 有效 valid" in out
        assert f"签发者 issuer identity: 通过 valid — {credentials.did_web(base)}" in out
        assert "VC verification time:" in out
        code, out = run_verifier(signed(base, 5))
        assert code == 1 and "状态 status: 已撤销 revoked" in out
        code, out = run_verifier(signed(base, 4, end=dt.date(2020, 1, 1), start=dt.date(2017, 1, 1)))
        assert code == 1 and "已过期 expired" in out
        tampered = signed(base, 4)
        head, body, sig = tampered.read_text().split(".")
        vc = json.loads(credentials.unb64url(body))
        vc["credentialSubject"]["name"] = "王五"
        tampered.write_text(f"{head}.{credentials.b64url(json.dumps(vc).encode())}.{sig}")
        code, out = run_verifier(tampered)
        assert code == 1 and "完整性 integrity: 不通过 invalid" in out and "有效 valid" not in out.split("integrity")[1]
    other = tokens.generate_token_key()
    with publisher(other, revoked=set()) as base:   # the DID names another key than the one that signed
        code, out = run_verifier(signed(base, 4))
        assert code == 1 and "完整性 integrity: 不通过 invalid" in out
    with publisher(key_pem, revoked={5}, status_up=False) as base:
        code, out = run_verifier(signed(base, 5))
        assert code == 2 and "状态 status: 无法核验 could not check" in out and "状态 status: 有效" not in out


def test_the_issuer_makes_the_same_credential_bytes_again(key_pem):
    class Keys:
        qr_private_pem = key_pem
        id_hash_key = b"h" * 32

    certificate = Certificate(certificate_number="1120262000001", holder_name="李明华", level="社会工作师",
                              authority="民政部", valid_from=TODAY, valid_until=dt.date(2029, 11, 25),
                              id_number="110105199003071234", status_list=2, status_index=77,
                              object_key="certificates/1120262000001.pdf")
    first = issuing.credential_of(certificate, Keys, BASE)
    assert first == issuing.credential_of(certificate, Keys, BASE)     # a retry stores the same bytes
    assert "110105199003071234" not in credentials.unb64url(first.split(".")[1]).decode()
    assert issuing.credential_key(certificate.object_key) == "certificates/1120262000001.vc.jwt"
    assert "?t=eyJ" in issuing.verification_url(BASE, Keys, certificate)
    certificate.status_list = None    # issued before the lists: the v1 token, number only
    assert issuing.verification_url(BASE, Keys, certificate).startswith(f"{BASE}?t=1120262000001.")
