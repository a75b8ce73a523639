"""Certificate over a real RabbitMQ, a real S3 server and real databases (SQLite and PostgreSQL):
final approval → number reserved → photo fetched → PDF rendered and signed in worker processes →
stored → certificate_issued; 查看证书; public verification; lifecycle; re-issue; bad input.

registration.get_issuance_data and profile.get_photo_link are answered by contract-faithful
stand-ins (see test_certificate_support.py for why); everything else is the real thing.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import urllib.parse
import urllib.request
import uuid

import pytest
from pypdf import PdfReader
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import select, update

from services.certificate import domain as certificate_domain
from services.certificate import credentials, signing, tokens
from services.certificate.models import Certificate, audit, throttle
from swms import idcard
from swms.auth import ADMIN, SERVICE, Caller
from swms.contracts.common import ApplicationKind, Level
from swms.contracts.events import ApplicationApproved, PasserLevelRaised
from swms.contracts.registration import IssuanceData
from swms.contracts.review import Stage
from swms.errors import SwmsError
from swms.outbox import utcnow
from swms.storage import make_s3_client
from tests.integration.test_certificate_support import (
    HOLDER_ID,
    ISSUANCE,
    PHOTOS,
    RARE_ID,
    application,
    approve,
    certificate,
    certificates,
    dev_key,
    issue_request,
    jpeg,
    objects,
    outbox_rows,
    raw_reply,
    running_certificate,
    settle,
    snapshot,
    state,
    store_photo,
    stored_pdf,
    wait_request,
)
from tests.support import (
    EventTap,
    dispatch,
    officer_token,
    rpc_client,
    session_for,
    token,
    valid_id,
    wait_until,
    worker_token,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(service_config, container_factory):
    """The certificate service (real), after the registration and profile stand-ins. Each test runs
    several scenarios on one started service (starting it, render workers included, is the slow
    part); each scenario scopes its assertions to the certificates it made."""
    with running_certificate(service_config, container_factory) as config:
        yield config


def test_issue_view_and_public_verification(stack, amqp_uri, keys_dir):
    check_final_approval_issues_a_signed_pdf_with_photo_and_a_masked_event(stack, amqp_uri, keys_dir)
    check_view_certificate_for_the_holder_and_officers_of_the_region(stack, amqp_uri, keys_dir)
    check_public_verification_refuses_forged_tokens_and_unknown_numbers(stack, amqp_uri)
    check_rare_characters_and_a_thirty_character_name_render(stack, amqp_uri)


def test_exactly_once_and_what_is_refused_or_retried(stack, amqp_uri, keys_dir):
    check_repeated_duplicate_and_non_final_approvals_issue_one_certificate(stack, amqp_uri)
    check_bad_issuance_data_is_refused_with_code_and_field_and_changes_nothing(stack, amqp_uri, keys_dir)
    check_the_renderer_refuses_text_that_came_by_another_path(stack, amqp_uri, keys_dir)
    check_an_unavailable_photo_is_retried_until_it_can_be_had(stack, amqp_uri, keys_dir)


def test_lifecycle_and_expiry(stack, amqp_uri, keys_dir):
    check_lifecycle_by_officers_with_reasons_and_the_refusals(stack, amqp_uri, keys_dir)
    check_expiry_after_the_validity_period(stack, amqp_uri)


def test_reissue_on_upgrade_and_replacement_of_a_paper_certificate(stack, amqp_uri, keys_dir):
    check_upgrade_marks_pending_then_reissues_and_supersedes(stack, amqp_uri, keys_dir)
    check_replacement_records_the_paper_certificates_no(stack, amqp_uri)


def test_public_verification_cannot_be_walked(service_config, container_factory, amqp_uri):
    """Per client address (context data client_ip) and, for lookups by number, in all: the walk of
    the hardening issue (40 sequential numbers from one address) gets 5 answers, none with holder
    data, then RATE_LIMITED; QR tokens still answer when numbers are exhausted in all."""
    limits = {"CERT_VERIFY_MAX_PER_ADDRESS": 5, "CERT_VERIFY_MAX_BY_NUMBER": 8, "CERT_VERIFY_WINDOW_SECONDS": 600}
    with running_certificate(service_config, container_factory, **limits) as config:
        _, event = issue(amqp_uri, snapshot())
        number = event["certificate_number"]
        prefix = number[:7]
        walked = []
        with verifier(amqp_uri, "203.0.113.7") as walker:
            for serial in range(1, 41):
                try:
                    walked.append(walker.certificate.verify_certificate(by_number(f"{prefix}{serial:06d}", "张伟")))
                except SwmsError as exc:
                    walked.append(exc)
        assert [e.code for e in walked[:5]] == ["NOT_FOUND"] * 5     # the real number too: wrong name
        assert {(e.code, e.field) for e in walked[5:]} == {("RATE_LIMITED", "certificate_number")}
        assert 540 <= int(walked[-1].details[0]["retry_after_seconds"]) <= 600   # error details travel as text
        # another address is not held back by that one; the real holder's name answers in full
        with verifier(amqp_uri, "198.51.100.1") as neighbour:
            assert neighbour.certificate.verify_certificate(by_number(number))["status"] == "current"
            for serial in (2, 3):
                with pytest.raises(SwmsError):
                    neighbour.certificate.verify_certificate(by_number(f"{prefix}{serial:06d}"))
        # 5 + 3 lookups by number: the limit in all is reached, for every address
        with verifier(amqp_uri, "192.0.2.44") as third:
            with pytest.raises(SwmsError) as caught:
                third.certificate.verify_certificate(by_number(number))
            assert (caught.value.code, caught.value.field) == ("RATE_LIMITED", "certificate_number")
            token = tokens.make_token(dev_key(config, "qr_token_key"), number)
            assert third.certificate.verify_certificate({"token": token})["status"] == "current"
        # callers that pass no address share one bucket
        with verifier(amqp_uri) as anonymous:
            for _ in range(5):
                assert anonymous.certificate.verify_certificate({"token": token})["holder_name_masked"] == "李**"
            with pytest.raises(SwmsError) as caught:
                anonymous.certificate.verify_certificate({"token": token})
            assert (caught.value.code, caught.value.field) == ("RATE_LIMITED", "token")
        with session_for(config["DB_URL"]) as session:
            keys = [row.key for row in session.execute(select(throttle.table)).all()]
        assert len(keys) == 5 and not any(address in key for key in keys
                                          for address in ("203.0.113.7", "198.51.100.1", "192.0.2.44"))


def verifier(amqp_uri: str, address: str | None = None):
    """A caller as the gateway makes it: the end user's address in context data client_ip."""
    return ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=20,
                           context_data={"client_ip": address} if address else {})


def issue(amqp_uri, snap, kind=ApplicationKind.FIRST_REGISTRATION, timeout=40, **extra) -> tuple[str, dict]:
    application_id = application(snap, kind, **extra)
    tap = EventTap(amqp_uri, "certificate", "certificate_issued")
    try:
        approve(amqp_uri, application_id)
        events = tap.collect(1, timeout=timeout)
    finally:
        tap.close()
    assert len(events) == 1, f"no certificate_issued for {application_id}"
    return application_id, events[0]


def attempts(config, application_id: str) -> int:
    request = issue_request(config, application_id)
    return request.attempts if request is not None else 0


def page_text(pdf: bytes) -> str:
    return "".join("".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())


def call(amqp_uri, auth_token, method, payload):
    with rpc_client(amqp_uri, auth_token) as client:
        method = getattr(client.certificate, method)
        return method() if payload is None else method(payload)


def error(amqp_uri, auth_token, method, payload) -> SwmsError:
    with pytest.raises(SwmsError) as caught:
        call(amqp_uri, auth_token, method, payload)
    return caught.value


def by_number(number: str, name: str = "李明华") -> dict:
    """Verification by number: only with the holder's full name (snapshot()'s default holder)."""
    return {"certificate_number": number, "holder_name": name}


def admin(keys_dir) -> str:
    return token(keys_dir, Caller(subject="admin-1", role=ADMIN))


def check_final_approval_issues_a_signed_pdf_with_photo_and_a_masked_event(config, amqp_uri, keys_dir):
    snap = snapshot(photo_key=store_photo(config, jpeg(noise=True)))
    application_id, event = issue(amqp_uri, snap)

    number = event["certificate_number"]
    assert len(number) == 13 and number.isdigit()
    assert number.startswith(f"11{dt.date.today().year}2")  # Beijing, this year, 社会工作师
    assert number.endswith("000001")
    assert (event["application_id"], event["person_id"], event["kind"]) == (application_id, snap.person_id,
                                                                           "first_registration")
    assert event["schema_version"] == 1 and event["event_id"]
    assert event["holder_name_masked"] == "李**"
    assert event["id_number_masked"] == idcard.mask(HOLDER_ID) == HOLDER_ID[:3] + "*" * 11 + HOLDER_ID[-4:]
    today = dt.date.today()
    assert event["valid_from"] == today.isoformat()
    assert event["valid_until"] == (today.replace(year=today.year + 3) - dt.timedelta(days=1)).isoformat()
    # the keyed hash: an agency holding the key matches the person without the number on the wire
    hash_key = dev_key(config, "id_hash_key")
    assert event["id_number_hash"] == tokens.id_hash(hash_key, HOLDER_ID)
    assert event["id_number_hash_key_id"] == tokens.id_hash_key_id(hash_key)
    wire = json.dumps(event, ensure_ascii=False)
    assert HOLDER_ID not in wire and HOLDER_ID[6:14] not in wire and "李明华" not in wire

    # stored privately under its number, checksum recorded, signed by the authority
    assert f"certificates/{number}.pdf" in objects(config)
    pdf = stored_pdf(config, number)
    assert hashlib.sha256(pdf).hexdigest() == event["sha256"]
    row = certificate(config, number)
    assert (row.certificate_number, row.status, row.sha256, row.photo_missing) == (number, "issued", event["sha256"],
                                                                                   False)
    published = call(amqp_uri, None, "get_signing_certificates", None)
    assert published["development_keys"] is True and row.signer_fingerprint == published["signer_fingerprint"]
    report = signing.validate_pdf(pdf, published["chain_pem"].encode())
    assert report.ok, report
    assert "中华人民共和国民政部" in report.signer_subject
    tampered = bytearray(pdf)
    tampered[len(pdf) // 3] ^= 0x01  # one bit of one byte inside the signed range
    assert not signing.validate_pdf(bytes(tampered), published["chain_pem"].encode()).ok
    acl = make_s3_client(config).get_object_acl(Bucket=config["CERTIFICATE_S3_BUCKET"], Key=f"certificates/{number}.pdf")
    assert [grant["Permission"] for grant in acl["Grants"]] == ["FULL_CONTROL"]  # private: the owner only

    # what is printed: name, number, level, authority, validity, the photo, the QR token
    text = page_text(pdf)
    for printed in ("李明华", number, "社会工作师", "中华人民共和国民政部", HOLDER_ID, "社会工作者登记证书",
                    f"{today.year}年{today.month}月{today.day}日"):
        assert printed in text, printed
    reader = PdfReader(io.BytesIO(pdf))
    images = [image for image in reader.pages[0].images]
    assert len(images) == 2  # the photo and the QR code
    view = call(amqp_uri, worker_token(keys_dir, snap.person_id), "view_certificate",
                {"application_id": application_id})
    token_in_qr = urllib.parse.parse_qs(urllib.parse.urlsplit(view["verification_url"]).query)["t"][0]
    assert view["verification_url"].startswith("https://verify.example.gov.cn/v?t=")
    verified = call(amqp_uri, None, "verify_certificate", {"token": token_in_qr})
    assert verified["status"] == "current" and verified["genuine"] is True
    assert verified["holder_name_masked"] == "李**" and verified["certificate_number"] == number
    assert set(verified) == {"genuine", "status", "status_label", "reason", "certificate_number", "holder_name_masked",
                             "level", "authority", "valid_from", "valid_until", "issued_on", "superseded_by",
                             "checked_at"}
    assert call(amqp_uri, None, "verify_certificate", by_number(number))["status_label"] == "有效"

    # the credential beside the PDF (docs/trust.md): signed with the published key, no ID number,
    # its status entries in lists the service publishes; the QR token is v2 (checked offline)
    assert f"certificates/{number}.vc.jwt" in objects(config) and view["credential_download_url"]
    stored_vc = make_s3_client(config).get_object(Bucket=config["CERTIFICATE_S3_BUCKET"],
                                                  Key=f"certificates/{number}.vc.jwt")["Body"].read().decode()
    qr_key = tokens.public_key_of(dev_key(config, "qr_token_key"))
    _, credential = credentials.verify_jws(qr_key, stored_vc, "vc+jwt")
    assert credential["credentialSubject"]["certificateNumber"] == number and HOLDER_ID not in stored_vc
    assert credential["issuer"]["id"] == published["issuer_did"] == "did:web:verify.example.gov.cn"
    assert credentials.read_qr_token(qr_key, token_in_qr)["holder_name_masked"] == "李**"
    entry = credential["credentialStatus"][0]
    listed = call(amqp_uri, None, "get_status_list", {"purpose": "revocation",
                                                       "list_number": int(entry["statusListCredential"].rsplit("/", 1)[1])})
    _, status_list = credentials.verify_jws(qr_key, listed["credential"], "vc+jwt")
    assert status_list["id"] == entry["statusListCredential"]
    assert not credentials.bit(credentials.decode_list(status_list["credentialSubject"]["encodedList"]),
                               int(entry["statusListIndex"]))

    status = call(amqp_uri, admin(keys_dir), "get_issuance_status", {"application_id": application_id})
    assert (status["status"], status["certificate_number"], status["last_error_code"]) == ("done", number, None)


def check_repeated_duplicate_and_non_final_approvals_issue_one_certificate(config, amqp_uri):
    application_id = application(snapshot())
    not_final = application(snapshot(id_number=valid_id("11010519920101002")))
    tap = EventTap(amqp_uri, "certificate", "certificate_issued")
    try:
        approve(amqp_uri, not_final, final=False)
        first = approve(amqp_uri, application_id)
        dispatch(amqp_uri, first)                       # the broker redelivers / the relay republishes
        again = approve(amqp_uri, application_id)       # a second final approval: a new event id
        assert again.event_id != first.event_id
        events = tap.collect(1, timeout=40)
        assert len(events) == 1
        later = tap.collect(1, timeout=4)  # every delivery has been handled well within this
    finally:
        tap.close()
    assert later == [], f"a second certificate_issued: {later}"
    rows = certificates(config)
    assert [row.certificate_number for row in rows] == [events[0]["certificate_number"]]  # the first of this run
    assert rows[0].application_id == application_id and rows[0].status == "issued"
    assert len(outbox_rows(config, "certificate_issued")) == 1
    assert objects(config) == [rows[0].object_key, rows[0].object_key.replace(".pdf", ".vc.jwt")]  # + its VC
    assert hashlib.sha256(stored_pdf(config, rows[0].certificate_number)).hexdigest() == rows[0].sha256
    assert issue_request(config, not_final) is None  # a non-final approval is not even recorded


def check_view_certificate_for_the_holder_and_officers_of_the_region(config, amqp_uri, keys_dir):
    snap = snapshot()
    application_id, event = issue(amqp_uri, snap)
    number = event["certificate_number"]

    own = call(amqp_uri, worker_token(keys_dir, snap.person_id), "view_certificate",
               {"application_id": application_id})
    assert (own["certificate_number"], own["person_id"], own["holder_name"]) == (number, snap.person_id, "李明华")
    assert own["status"] == "issued" and own["sha256"] == event["sha256"] and own["photo_missing"] is True
    assert own["download_expires_in_seconds"] == 300
    with urllib.request.urlopen(own["download_url"], timeout=10) as response:
        downloaded = response.read()
    assert downloaded == stored_pdf(config, number)
    assert hashlib.sha256(downloaded).hexdigest() == event["sha256"]
    assert "照片未提供" in page_text(downloaded)  # no photo in the snapshot: the documented placeholder

    for officer in (officer_token(keys_dir, "110105", "county"), officer_token(keys_dir, "110100", "city"),
                    officer_token(keys_dir, "110000", "province")):
        assert call(amqp_uri, officer, "view_certificate", {"application_id": application_id})["certificate_number"] \
            == number

    # support staff (administrators) say why; each such view is audited
    no_reason = error(amqp_uri, admin(keys_dir), "view_certificate", {"application_id": application_id})
    assert (no_reason.code, no_reason.field) == ("VALIDATION_FAILED", "access_reason")
    assert call(amqp_uri, admin(keys_dir), "view_certificate",
                {"application_id": application_id, "access_reason": "工单 31：持证人无法下载"})["certificate_number"] == number
    with session_for(config["DB_URL"]) as session:
        [read] = [row for row in audit.for_entity(session, number) if row["action"] == "personal_data.read_by_admin"]
    assert (read["actor"], read["detail"]) == ("admin-1", {"method": "view_certificate", "reason": "工单 31：持证人无法下载",
                                                           "application_id": application_id})

    # bad input: someone else's certificate, another region's officer, nobody, a forged token
    stranger = error(amqp_uri, worker_token(keys_dir, str(uuid.uuid4())), "view_certificate",
                     {"application_id": application_id})
    assert stranger.code == "FORBIDDEN"
    neighbour = error(amqp_uri, officer_token(keys_dir, "110106", "county"), "view_certificate",
                      {"application_id": application_id})
    assert neighbour.code == "FORBIDDEN"
    other_province = error(amqp_uri, officer_token(keys_dir, "440000", "province"), "view_certificate",
                           {"application_id": application_id})
    assert other_province.code == "FORBIDDEN"
    anonymous = error(amqp_uri, None, "view_certificate", {"application_id": application_id})
    assert (anonymous.code, anonymous.field) == ("AUTH_REQUIRED", "auth_token")
    forged = error(amqp_uri, "eyJhbGciOiJFZERTQSJ9.e30.c2ln", "view_certificate", {"application_id": application_id})
    assert forged.code == "TOKEN_INVALID"
    status_stranger = error(amqp_uri, worker_token(keys_dir, str(uuid.uuid4())), "get_issuance_status",
                            {"application_id": application_id})
    assert status_stranger.code == "FORBIDDEN"

    # unknown or malformed application
    unknown = str(uuid.uuid4())
    assert error(amqp_uri, admin(keys_dir), "view_certificate",
                 {"application_id": unknown, "access_reason": "工单 12"}).code == "NOT_FOUND"
    # a social worker learns nothing about applications that are not theirs
    assert error(amqp_uri, worker_token(keys_dir, str(uuid.uuid4())), "view_certificate",
                 {"application_id": unknown}).code == "FORBIDDEN"
    malformed = error(amqp_uri, admin(keys_dir), "view_certificate", {"application_id": "not-a-uuid"})
    assert (malformed.code, malformed.field) == ("VALIDATION_FAILED", "application_id")
    extra = error(amqp_uri, admin(keys_dir), "view_certificate", {"application_id": application_id, "x": 1})
    assert (extra.code, extra.field) == ("VALIDATION_FAILED", "x")


def check_rare_characters_and_a_thirty_character_name_render(config, amqp_uri):
    rare = "张𠮷䶮"  # U+5F20, U+20BB7 (CJK Ext. B, outside the BMP), U+4DAE (CJK Ext. A)
    assert any(ord(ch) > 0xFFFF for ch in rare)
    long_name = "阿卜杜热合曼·买买提依明·艾合买提江·吐尔逊托合提江·古丽𠮷"
    assert len(long_name) == 30
    _, rare_event = issue(amqp_uri, snapshot(name=rare, id_number=RARE_ID))
    _, long_event = issue(amqp_uri, snapshot(name=long_name, id_number=valid_id("65010219880808123"),
                                             region="650102"))
    assert rare_event["holder_name_masked"] == "张**"  # a code point, not a UTF-16 unit, per character
    assert long_event["holder_name_masked"] == "阿" + "*" * 29
    assert long_event["certificate_number"].startswith(f"65{dt.date.today().year}2")
    for event, name in ((rare_event, rare), (long_event, long_name)):
        pdf = stored_pdf(config, event["certificate_number"])
        assert hashlib.sha256(pdf).hexdigest() == event["sha256"]
        reader = PdfReader(io.BytesIO(pdf))
        assert len(reader.pages) == 1  # a long name wraps, it never pushes the certificate onto two pages
        assert name in page_text(pdf)
        fonts = {str(font["/BaseFont"]) for font in _fonts(reader)}
        assert fonts and all("CJK" in f or "SWMS" in f for f in fonts), fonts  # CJK fonts only: no boxes
    assert {rare, long_name} <= {c.holder_name for c in certificates(config)}


def _fonts(reader: PdfReader):
    resources = reader.pages[0]["/Resources"]["/Font"]
    return [resources[name].get_object() for name in resources]


def check_lifecycle_by_officers_with_reasons_and_the_refusals(config, amqp_uri, keys_dir):
    snap = snapshot()
    _, event = issue(amqp_uri, snap)
    number = event["certificate_number"]
    county = officer_token(keys_dir, "110105", "county", "officer-chaoyang")
    tap = EventTap(amqp_uri, "certificate", "#")
    try:
        # bad input first: each refused with its code and field, and nothing changes
        before = state(config)
        cases = [
            (county, "revoke_certificate", {"certificate_number": number}, "REASON_REQUIRED", "reason"),
            (county, "revoke_certificate", {"certificate_number": number, "reason": "   "}, "REASON_REQUIRED", "reason"),
            (county, "suspend_certificate", {"certificate_number": number, "reason": "理" * 501},
             "VALIDATION_FAILED", "reason"),
            (officer_token(keys_dir, "110106", "county"), "revoke_certificate",
             {"certificate_number": number, "reason": "虚假材料"}, "FORBIDDEN", "certificate_number"),
            (officer_token(keys_dir, "440000", "province"), "suspend_certificate",
             {"certificate_number": number, "reason": "调查中"}, "FORBIDDEN", "certificate_number"),
            (worker_token(keys_dir, snap.person_id), "revoke_certificate",
             {"certificate_number": number, "reason": "我不要了"}, "FORBIDDEN", "auth_token"),
            (token(keys_dir, Caller(subject="registration", role=SERVICE)), "revoke_certificate",
             {"certificate_number": number, "reason": "服务不可撤销"}, "FORBIDDEN", "auth_token"),
            (None, "revoke_certificate", {"certificate_number": number, "reason": "匿名"}, "AUTH_REQUIRED", "auth_token"),
            (county, "revoke_certificate", {"certificate_number": "1120269999999", "reason": "虚假材料"},
             "NOT_FOUND", "certificate_number"),
            (county, "revoke_certificate", {"certificate_number": "11-2026", "reason": "虚假材料"},
             "VALIDATION_FAILED", "certificate_number"),
            (county, "reinstate_certificate", {"certificate_number": number, "reason": "无需恢复"},
             "INVALID_STATE", "certificate_number"),
        ]
        for auth_token, method, payload, code, field in cases:
            refused = error(amqp_uri, auth_token, method, payload)
            assert (refused.code, refused.field) == (code, field), (method, payload, refused)
            assert refused.message
        assert state(config) == before

        suspended = call(amqp_uri, county, "suspend_certificate", {"certificate_number": number,
                                                                   "reason": "涉嫌违规执业，调查期间暂停"})
        assert (suspended["status"], suspended["changed_by"]) == ("suspended", "officer-chaoyang")
        verified = call(amqp_uri, None, "verify_certificate", by_number(number))
        assert (verified["status"], verified["reason"], verified["status_label"]) == (
            "suspended", "涉嫌违规执业，调查期间暂停", "已暂停")
        again = error(amqp_uri, county, "suspend_certificate", {"certificate_number": number, "reason": "再次"})
        assert (again.code, again.field) == ("INVALID_STATE", "certificate_number")
        reinstated = call(amqp_uri, officer_token(keys_dir, "110000", "province"), "reinstate_certificate",
                          {"certificate_number": number, "reason": "调查结束，未发现违规"})
        assert reinstated["status"] == "issued"
        assert call(amqp_uri, None, "verify_certificate", by_number(number))["status"] == "current"
        revoked = call(amqp_uri, admin(keys_dir), "revoke_certificate",
                       {"certificate_number": number, "reason": "以欺骗手段取得登记"})
        assert revoked["status"] == "revoked"
        verified = call(amqp_uri, None, "verify_certificate", by_number(number))
        assert (verified["status"], verified["reason"]) == ("revoked", "以欺骗手段取得登记")
        final = error(amqp_uri, county, "reinstate_certificate", {"certificate_number": number, "reason": "恢复"})
        assert final.code == "INVALID_STATE"
        events = tap.collect(3, timeout=20)
    finally:
        tap.close()
    assert [e["certificate_number"] for e in events] == [number] * 3
    kinds = [e["reason"] for e in events]
    assert kinds == ["涉嫌违规执业，调查期间暂停", "调查结束，未发现违规", "以欺骗手段取得登记"]
    assert [e["status"] for e in events] == ["suspended", "issued", "revoked"]
    assert [e["changed_by"] for e in events] == ["officer-chaoyang", "officer-1", "admin-1"]
    for lifecycle_event in events:
        assert lifecycle_event["id_number_masked"] == idcard.mask(HOLDER_ID)
        assert HOLDER_ID not in json.dumps(lifecycle_event, ensure_ascii=False)
        assert lifecycle_event["schema_version"] == 1
    types = [row["event_type"] for row in outbox_rows(config)]
    assert types == ["certificate_issued", "certificate_suspended", "certificate_reinstated", "certificate_revoked"]
    assert certificate(config, number).status_changed_by == "admin-1"


def check_expiry_after_the_validity_period(config, amqp_uri):
    _, event = issue(amqp_uri, snapshot())
    number = event["certificate_number"]
    with session_for(config["DB_URL"]) as session:  # as if three years had passed
        session.execute(update(Certificate).where(Certificate.certificate_number == number)
                        .values(valid_until=dt.date.today() - dt.timedelta(days=1)))
        session.commit()
    # verification already answers "expired" before the timer has run
    assert call(amqp_uri, None, "verify_certificate", by_number(number))["status"] == "expired"
    tap = EventTap(amqp_uri, "certificate", "certificate_expired")
    try:
        [expired] = tap.collect(1, timeout=20)
    finally:
        tap.close()
    assert (expired["certificate_number"], expired["status"], expired["changed_by"]) == (number, "expired", "system")
    assert certificate(config, number).status == "expired"
    verified = call(amqp_uri, None, "verify_certificate", by_number(number))
    assert (verified["status"], verified["status_label"]) == ("expired", "已过期")
    settle(2.5)  # two more timer runs: nothing is expired twice
    assert len(outbox_rows(config, "certificate_expired")) == 1


def check_upgrade_marks_pending_then_reissues_and_supersedes(config, amqp_uri, keys_dir):
    person_id = str(uuid.uuid4())
    _, first = issue(amqp_uri, snapshot(person_id=person_id, level=Level.ASSISTANT))
    old_number = first["certificate_number"]
    assert old_number[6] == "1"  # level digit: 助理社会工作师

    dispatch(amqp_uri, PasserLevelRaised(person_id=person_id, previous_level=Level.ASSISTANT,
                                         new_level=Level.SOCIAL_WORKER, management_number="202711000000000001",
                                         exam_year=dt.date.today().year))
    wait_until(lambda: certificate(config, old_number).pending_upgrade_level == "社会工作师", timeout=15,
               what="已出证待升级")
    holder = worker_token(keys_dir, person_id)
    first_application = certificate(config, old_number).application_id
    assert call(amqp_uri, holder, "view_certificate",
                {"application_id": first_application})["pending_upgrade_level"] == "社会工作师"

    tap = EventTap(amqp_uri, "certificate", "certificate_reissued")
    try:
        upgrade_id, issued = issue(amqp_uri, snapshot(person_id=person_id, level=Level.SOCIAL_WORKER),
                                   ApplicationKind.UPGRADE)
        [reissued] = tap.collect(1, timeout=20)
    finally:
        tap.close()
    new_number = issued["certificate_number"]
    assert new_number != old_number and new_number[6] == "2"
    assert (issued["kind"], issued["supersedes"]) == ("upgrade", old_number)
    assert (reissued["certificate_number"], reissued["new_certificate_number"]) == (old_number, new_number)
    assert reissued["status"] == "superseded" and "社会工作师" in reissued["reason"]
    old = certificate(config, old_number)
    assert (old.status, old.superseded_by, old.pending_upgrade_level) == ("superseded", new_number, None)
    verified = call(amqp_uri, None, "verify_certificate", by_number(old_number))
    assert (verified["status"], verified["superseded_by"]) == ("superseded", new_number)
    assert call(amqp_uri, None, "verify_certificate", by_number(new_number))["status"] == "current"
    assert f"本证书换发并取代证书{old_number}" in page_text(stored_pdf(config, new_number))
    view = call(amqp_uri, holder, "view_certificate", {"application_id": upgrade_id})
    assert (view["level"], view["supersedes"], view["pending_upgrade_level"]) == ("社会工作师", old_number, None)


def check_replacement_records_the_paper_certificates_no(config, amqp_uri):
    start, end = dt.date(2025, 3, 1), dt.date(2028, 2, 29)
    _, event = issue(amqp_uri, snapshot(), ApplicationKind.REPLACEMENT, original_certificate_no="20250301",
                     original_registration_type="首次登记", original_valid_from=start, original_valid_until=end)
    number = event["certificate_number"]
    assert (event["kind"], event["original_certificate_no"]) == ("replacement", "20250301")
    assert (event["valid_from"], event["valid_until"]) == (start.isoformat(), end.isoformat())  # as on the paper
    row = certificate(config, number)
    assert (row.original_certificate_no, row.original_registration_type) == ("20250301", "首次登记")
    assert "由纸质登记证书NO.20250301更换为电子证书" in page_text(stored_pdf(config, number))


def check_bad_issuance_data_is_refused_with_code_and_field_and_changes_nothing(config, amqp_uri, keys_dir):
    person = str(uuid.uuid4())
    corrupt = store_photo(config, jpeg()[:600])                     # a truncated JPEG
    too_big = store_photo(config, jpeg(2000, 2800, 100, noise=True))  # more than 500 KB
    tiny = store_photo(config, jpeg(60, 80))                         # not an ID photo
    cases = {
        "replacement without the NO": (dict(kind=ApplicationKind.REPLACEMENT), "ORIGINAL_NO_REQUIRED",
                                       "original_certificate_no"),
        "NO of 7 digits": (dict(kind=ApplicationKind.REPLACEMENT, original_certificate_no="2025030"),
                           "ORIGINAL_NO_INVALID", "original_certificate_no"),
        "NO with a letter": (dict(kind=ApplicationKind.REPLACEMENT, original_certificate_no="2025030A"),
                             "ORIGINAL_NO_INVALID", "original_certificate_no"),
        "paper validity reversed": (dict(kind=ApplicationKind.REPLACEMENT, original_certificate_no="20250301",
                                         original_valid_from=dt.date(2026, 1, 1), original_valid_until=dt.date(2025, 1, 1)),
                                    "ORIGINAL_VALIDITY_INVALID", "original_valid_until"),
        "upgrade without a certificate": (dict(kind=ApplicationKind.UPGRADE), "PREVIOUS_CERTIFICATE_NOT_FOUND",
                                          "previous_certificate_number"),
        "upgrade naming an unknown certificate": (dict(kind=ApplicationKind.UPGRADE,
                                                       previous_certificate_number="1120261000999"),
                                                  "PREVIOUS_CERTIFICATE_NOT_FOUND", "previous_certificate_number"),
        "markup in the name": (dict(snap=dict(name="<b>李明华</b>")), "NAME_INVALID", "snapshot.name"),
        "a 51-character name": (dict(snap=dict(name="李" * 51)), "NAME_INVALID", "snapshot.name"),
        "control character in the name": (dict(snap=dict(name="李\x00明华")), "NAME_INVALID", "snapshot.name"),
        "bidi override in the name": (dict(snap=dict(name="李\u202e华明")), "NAME_INVALID", "snapshot.name"),
        "bidi override in the unit name": (dict(snap=dict(unit_name="阳光社会工作服务中心\u202e心中务服")),
                                           "TEXT_CHARACTERS_NOT_ALLOWED", "snapshot.unit_name"),
        "emoji ZWJ sequence in the unit name": (dict(snap=dict(unit_name="阳光👨\u200d👩\u200d👧社工站")),
                                                "TEXT_CHARACTERS_NOT_ALLOWED", "snapshot.unit_name"),
        "line break in the unit name": (dict(snap=dict(unit_name="阳光社工站\n（已注销）")),
                                        "TEXT_CHARACTERS_NOT_ALLOWED", "snapshot.unit_name"),
        "wrong ID check digit": (dict(snap=dict(id_number="360426199101010072")), "ID_NUMBER_INVALID",
                                 "snapshot.id_number"),
        "gender against the ID number": (dict(snap=dict(gender="女")), "GENDER_MISMATCH", "snapshot.gender"),
        "region code of no province": (dict(snap=dict(region_code="990105")), "REGION_INVALID",
                                       "snapshot.region_code"),
        "unknown level": (dict(raw={"snapshot.level": "博士社会工作师"}), "ISSUANCE_DATA_INVALID", "snapshot.level"),
        "snapshot of another person": (dict(raw={"snapshot.person_id": person}), "PERSON_MISMATCH",
                                       "snapshot.person_id"),
        "corrupt photo": (dict(snap=dict(photo_key=corrupt)), "PHOTO_INVALID", "photo"),
        "photo over 500 KB": (dict(snap=dict(photo_key=too_big)), "PHOTO_INVALID", "photo"),
        "photo too small": (dict(snap=dict(photo_key=tiny)), "PHOTO_INVALID", "photo"),
    }
    before = state(config)
    applications = {}
    for label, (spec, code, field) in cases.items():
        snap = snapshot(**spec.get("snap", {}))
        extra = {k: v for k, v in spec.items() if k not in ("snap", "raw", "kind")}
        applications[label] = application(snap, spec.get("kind", ApplicationKind.FIRST_REGISTRATION),
                                          raw=spec.get("raw"), **extra)
    unknown = str(uuid.uuid4())  # approved, but registration has no such application
    for application_id in [*applications.values(), unknown]:
        approve(amqp_uri, application_id)
    for label, application_id in applications.items():
        request = wait_request(config, application_id, "failed")
        assert (request.last_error_code, request.last_error_field) == cases[label][1:], label
        assert request.last_error and request.certificate_number is None, label
    assert (wait_request(config, unknown, "failed").last_error_code) == "APPLICATION_NOT_FOUND"
    after = state(config)
    assert after["certificates"] == before["certificates"]
    assert after["serials"] == before["serials"]   # no number was used up
    assert after["objects"] == before["objects"]
    assert after["outbox"] == before["outbox"]
    # the holder (or an officer) is told why, in Chinese, instead of a certificate
    refused_id = applications["corrupt photo"]
    holder = worker_token(keys_dir, ISSUANCE[refused_id]["snapshot"]["person_id"])
    refused = error(amqp_uri, holder, "view_certificate", {"application_id": refused_id})
    assert (refused.code, refused.field) == ("CERTIFICATE_NOT_ISSUED", "application_id")
    assert refused.details[0]["code"] == "PHOTO_INVALID" and "照片" in refused.message
    status = call(amqp_uri, holder, "get_issuance_status", {"application_id": refused_id})
    assert (status["status"], status["last_error_code"], status["last_error_field"]) == ("failed", "PHOTO_INVALID",
                                                                                        "photo")


def check_the_renderer_refuses_text_that_came_by_another_path(config, amqp_uri, keys_dir):
    """A certificate reserved while the checks looked only at the unit name's length, and left
    issuing: on the next attempt the renderer itself refuses the U+202E (it would make the PDF read
    otherwise than what was approved). Nothing is printed or stored, no event, and the refusal is
    recorded like any other, not retried."""
    snap = snapshot()
    application_id = application(snap)
    event = ApplicationApproved(application_id=application_id, person_id=snap.person_id,
                                kind=ApplicationKind.FIRST_REGISTRATION, region_code=snap.region_code,
                                stage=Stage.FINAL, final=True, decided_by="officer-province",
                                decided_at=dt.datetime.now(dt.timezone.utc))
    with session_for(config["DB_URL"]) as session:   # one transaction: the sweep sees all of it or none
        request = certificate_domain.record_approval(session, event, utcnow())
        reserved = certificate_domain.reserve(
            session, request, IssuanceData(application_id=application_id, kind=ApplicationKind.FIRST_REGISTRATION,
                                           snapshot=snap),
            authority="中华人民共和国民政部", validity_years=3, today=dt.date.today(), photo_missing=True)
        reserved.unit_name = "北京市朝阳区阳光社会工作服务中心\u202e心中务服"
        number = reserved.certificate_number
        session.commit()
    before = state(config)
    approve(amqp_uri, application_id)   # the approval delivered again (or the sweep): the issue is resumed
    request = wait_request(config, application_id, "failed")
    assert (request.last_error_code, request.last_error_field) == ("TEXT_CHARACTERS_NOT_ALLOWED", "unit_name")
    assert "U+202E" in request.last_error and request.attempts == 1
    after = state(config)
    assert f"certificates/{number}.pdf" not in after["objects"] and after["objects"] == before["objects"]
    assert after["outbox"] == before["outbox"]   # no certificate_issued
    assert certificate(config, number).status == "issuing"   # the number stays unused
    refused = error(amqp_uri, worker_token(keys_dir, snap.person_id), "view_certificate",
                    {"application_id": application_id})
    assert (refused.code, refused.details[0]["code"]) == ("CERTIFICATE_NOT_ISSUED", "TEXT_CHARACTERS_NOT_ALLOWED")


def check_an_unavailable_photo_is_retried_until_it_can_be_had(config, amqp_uri, keys_dir):
    key = store_photo(config, jpeg())
    stored = PHOTOS[key]
    PHOTOS[key] = ("error", "UPSTREAM_UNAVAILABLE")   # profile cannot hand out the link for now
    snap = snapshot(photo_key=key)
    application_id = application(snap)
    tap = EventTap(amqp_uri, "certificate", "certificate_issued")
    try:
        approve(amqp_uri, application_id)
        wait_until(lambda: attempts(config, application_id) >= 2, timeout=20, what="two attempts")
        request = issue_request(config, application_id)
        assert (request.status, request.last_error_code, request.last_error_field) == ("pending", "PHOTO_UNAVAILABLE",
                                                                                      "photo")
        before = state(config)
        assert application_id not in {c.application_id for c in certificates(config)}  # nothing reserved yet
        not_ready = error(amqp_uri, worker_token(keys_dir, snap.person_id), "view_certificate",
                          {"application_id": application_id})
        assert (not_ready.code, not_ready.field) == ("CERTIFICATE_NOT_READY", "application_id")
        PHOTOS[key] = ("url", "http://127.0.0.1:9/unreachable.jpg")  # then a link that does not answer
        wait_until(lambda: attempts(config, application_id) >= 3, timeout=20, what="a third attempt")
        assert issue_request(config, application_id).last_error_code == "PHOTO_UNAVAILABLE"
        PHOTOS[key] = stored                            # the photo can be had again
        [event] = tap.collect(1, timeout=30)
    finally:
        tap.close()
    row = certificate(config, event["certificate_number"])
    assert (row.application_id, row.photo_missing) == (application_id, False)
    assert len(certificates(config)) == len(before["certificates"]) + 1
    assert issue_request(config, application_id).status == "done"
    assert len(PdfReader(io.BytesIO(stored_pdf(config, row.certificate_number))).pages[0].images) == 2


def check_public_verification_refuses_forged_tokens_and_unknown_numbers(config, amqp_uri):
    _, event = issue(amqp_uri, snapshot())
    number = event["certificate_number"]
    real = tokens.make_token(dev_key(config, "qr_token_key"), number)
    other_key = tokens.generate_token_key()
    signature = real.split(".")[1]
    swapped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    before = state(config)
    forged_cases = {
        "signed with another key": tokens.make_token(other_key, number),
        "number altered": f"{int(number) + 1}.{signature}",
        "signature altered": f"{number}.{swapped}",
        "truncated": real[:-5],
        "no signature": number,
        "garbage": "hello-world",
        "empty signature": f"{number}.",
    }
    for label, forged in forged_cases.items():
        refused = error(amqp_uri, None, "verify_certificate", {"token": forged})
        assert (refused.code, refused.field) == ("VERIFICATION_TOKEN_FORGED", "token"), label
    assert call(amqp_uri, None, "verify_certificate", {"token": real})["status"] == "current"
    invalid_requests = [
        (by_number("1120269999999"), "NOT_FOUND", "certificate_number"),
        ({"certificate_number": number}, "VALIDATION_FAILED", "holder_name"),    # a number alone tells nothing
        ({"certificate_number": number, "holder_name": " "}, "VALIDATION_FAILED", "holder_name"),
        ({"certificate_number": "112026", "holder_name": "李明华"}, "VALIDATION_FAILED", "certificate_number"),
        ({"certificate_number": number, "holder_name": "李明华", "token": real}, "VALIDATION_FAILED", "payload"),
        ({"token": real, "holder_name": "李明华"}, "VALIDATION_FAILED", "payload"),
        ({}, "VALIDATION_FAILED", "payload"),
        ({"token": "x" * 601}, "VALIDATION_FAILED", "token"),
        ({"certificate_number": number, "holder_name": "李" * 51}, "VALIDATION_FAILED", "holder_name"),
    ]
    for payload, code, field in invalid_requests:
        refused = error(amqp_uri, None, "verify_certificate", payload)
        assert (refused.code, refused.field) == (code, field), payload
    # A wrong name answers byte for byte like a number never issued: nothing tells that the number
    # exists, nor how much of the name was right.
    unknown = raw_reply(amqp_uri, "verify_certificate", by_number("1120269999999"))
    assert json.loads(unknown)["error"]["exc_args"][0] == "NOT_FOUND"
    for wrong in ("李明", "李明华华", "李明辉", "王明华", "李"):
        assert raw_reply(amqp_uri, "verify_certificate", by_number(number, wrong)) == unknown, wrong
    assert json.loads(raw_reply(amqp_uri, "verify_certificate", by_number(number, "李 明华")))["error"] is None
    # a well-formed token for a number this system never issued (as if the key had leaked): unknown
    never = tokens.make_token(dev_key(config, "qr_token_key"), "1120269999999")
    assert error(amqp_uri, None, "verify_certificate", {"token": never}).code == "NOT_FOUND"
    assert state(config) == before
