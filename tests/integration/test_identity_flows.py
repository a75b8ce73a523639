"""Identity's flows over a real RabbitMQ, a real S3 server (moto) and real databases (SQLite and
PostgreSQL): 反馈 from submission to sign-up, tokens and refresh, rate limits, password reset,
level raised by a later list, the lookups notification uses, and what reaches logs and events."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import urllib.request
import uuid

import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import func, select

from services.identity import domain
from services.identity.models import Feedback, Passer, audit
from swms.auth import ADMIN, OFFICER, SERVICE, Caller
from swms.errors import SwmsError
from swms.outbox import utcnow
from swms.storage import make_s3_client
from tests.support import EventTap, results_or_codes, session_for, token, valid_id, worker_token

pytestmark = pytest.mark.integration

THIS_YEAR = dt.date.today().year
HOLDER_ID = valid_id("11010519900307123")
NEWCOMER_ID = valid_id("11010519920415162")
PASSWORD = "Strong-pass-1"
HOLDER_SIGN_UP = {"name": "李明华", "id_number": HOLDER_ID, "email": "li@example.cn", "password": PASSWORD}
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def client(amqp_uri, auth_token=None, **context):
    if auth_token:
        context["auth_token"] = auth_token
    return ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=20, context_data=context)


def expect_error(call, code, field=None):
    with pytest.raises(SwmsError) as caught:
        call()
    assert caught.value.code == code, caught.value
    if field is not None:
        assert caught.value.field == field, caught.value
    assert caught.value.message
    return caught.value


@pytest.fixture
def identity(start_service):
    config = start_service("identity", IDENTITY_S3_BUCKET=f"identity-{uuid.uuid4().hex[:12]}")
    with session_for(config["DB_URL"]) as session:
        report = domain.import_passers(session, [
            {"name": "李明华", "id_number": HOLDER_ID, "level": "助理社会工作师", "management_number": "202411000000000001",
             "exam_year": str(THIS_YEAR - 2), "province": "11"},
        ])
        session.commit()
    assert report.added == 1
    return config


def bucket_keys(config) -> list[str]:
    listing = make_s3_client(config).list_objects_v2(Bucket=config["IDENTITY_S3_BUCKET"])
    return [item["Key"] for item in listing.get("Contents", [])]


def feedback_request(**overrides):
    request = {"name": "张 伟", "id_number": NEWCOMER_ID, "email": "zhangwei@example.cn", "level": "社会工作师",
               "exam_year": THIS_YEAR, "note": "2025年考试通过，注册时提示查无此人", "region_code": "110105",
               "proof": {"filename": "成绩单.pdf", "content_type": "application/pdf",
                         "content_base64": base64.b64encode(PDF).decode()}}
    request.update(overrides)
    return request


def test_feedback_from_submission_to_sign_up(identity, amqp_uri, keys_dir):
    submitted_tap = EventTap(amqp_uri, "identity", "feedback_submitted")
    decided_tap = EventTap(amqp_uri, "identity", "feedback_decided")
    county = token(keys_dir, Caller("officer-chaoyang", OFFICER, "110105", "county"))
    other_county = token(keys_dir, Caller("officer-haidian", OFFICER, "110108", "county"))
    notification = token(keys_dir, Caller("notification", SERVICE))
    try:
        with client(amqp_uri) as public:
            expect_error(lambda: public.identity.check_passer({"name": "张伟", "id_number": NEWCOMER_ID}),
                         "PASSER_NOT_FOUND", "id_number")
            receipt = public.identity.submit_feedback(feedback_request())
            assert receipt["status"] == "pending"
            expect_error(lambda: public.identity.submit_feedback(feedback_request(proof=None)),
                         "FEEDBACK_ALREADY_PENDING", "id_number")
            expect_error(lambda: public.identity.submit_feedback(feedback_request(
                id_number=HOLDER_ID, level="助理社会工作师", proof=None)), "ALREADY_IN_REGISTRY", "id_number")
        feedback_id = receipt["feedback_id"]
        [submitted] = submitted_tap.collect(1)
        assert submitted["feedback_id"] == feedback_id and submitted["region_code"] == "110105"
        assert submitted["applicant_name_masked"] == "张**"
        assert NEWCOMER_ID not in json.dumps(submitted) and "zhangwei" not in json.dumps(submitted)

        with client(amqp_uri, other_county) as stranger:
            assert stranger.identity.list_feedback({})["total"] == 0
            expect_error(lambda: stranger.identity.get_feedback({"feedback_id": feedback_id}), "NOT_FOUND")
            expect_error(lambda: stranger.identity.decide_feedback(
                {"feedback_id": feedback_id, "decision": "approve", "management_number": "1"}), "NOT_FOUND")
        with client(amqp_uri, notification) as service:
            contact = service.identity.get_feedback_contact({"feedback_id": feedback_id})
            assert contact == {"person_id": None, "name": "张 伟", "email": "zhangwei@example.cn"}
            officers = service.identity.list_officer_contacts({"region_code": "110105"})
            assert officers["items"] == []   # none created in this test: covered by test_identity_accounts
        with client(amqp_uri, county) as officer:
            page = officer.identity.list_feedback({})
            assert page["total"] == 1 and page["items"][0]["id_number_masked"] == "110***********" + NEWCOMER_ID[-4:]
            assert NEWCOMER_ID not in json.dumps(page)
            detail = officer.identity.get_feedback({"feedback_id": feedback_id})
            assert detail["id_number"] == NEWCOMER_ID and detail["email"] == "zhangwei@example.cn"
            with urllib.request.urlopen(detail["proof"]["url"], timeout=10) as response:
                body = response.read()
            assert body == PDF and detail["proof"]["sha256"] == hashlib.sha256(PDF).hexdigest()
            expect_error(lambda: officer.identity.decide_feedback({"feedback_id": feedback_id, "decision": "approve"}),
                         "VALIDATION_FAILED", "management_number")
            decided = officer.identity.decide_feedback({"feedback_id": feedback_id, "decision": "approve",
                                                        "management_number": "202511000000000777"})
            assert decided["status"] == "approved" and decided["decided_by"] == "officer-chaoyang"
            expect_error(lambda: officer.identity.decide_feedback(
                {"feedback_id": feedback_id, "decision": "reject", "reason": "x"}), "ALREADY_DECIDED", "feedback_id")
            assert officer.identity.list_feedback({})["total"] == 0
            assert officer.identity.list_feedback({"status": "approved"})["total"] == 1
        [decision] = decided_tap.collect(1)
        assert decision["feedback_id"] == feedback_id and decision["approved"] is True

        with client(amqp_uri) as public:   # the person is now in the registry and signs up
            passer = public.identity.check_passer({"name": "张伟", "id_number": NEWCOMER_ID})
            assert passer == {"level": "社会工作师", "management_number": "202511000000000777", "exam_year": THIS_YEAR}
            account = public.identity.sign_up({"name": "张伟", "id_number": NEWCOMER_ID,
                                               "email": "zhangwei@example.cn", "password": PASSWORD})
        with client(amqp_uri, notification) as service:
            assert service.identity.get_feedback_contact({"feedback_id": feedback_id})["person_id"] == account["person_id"]
        with session_for(identity["DB_URL"]) as session:
            assert session.execute(select(Passer.source).where(Passer.id_number == NEWCOMER_ID)).scalar_one() == "feedback"
            actions = [entry["action"] for entry in audit.for_entity(session, feedback_id)]
        assert actions == ["feedback.submitted", "feedback.viewed", "feedback.approved"]
    finally:
        submitted_tap.close()
        decided_tap.close()


def test_rejected_feedback_frees_the_id_number_and_leaves_no_orphan_proof(identity, amqp_uri, keys_dir):
    tap = EventTap(amqp_uri, "identity", "feedback_decided")
    province = token(keys_dir, Caller("officer-beijing", OFFICER, "110000", "province"))
    try:
        with client(amqp_uri) as public:
            first = public.identity.submit_feedback(feedback_request())["feedback_id"]
            # refused after the checks that need no upload, and refused at commit: no orphan either way
            expect_error(lambda: public.identity.submit_feedback(feedback_request()), "FEEDBACK_ALREADY_PENDING")
        assert bucket_keys(identity) == [f"feedback/{first}/proof.pdf"]
        with client(amqp_uri, province) as officer:
            expect_error(lambda: officer.identity.decide_feedback({"feedback_id": first, "decision": "reject"}),
                         "VALIDATION_FAILED", "reason")
            officer.identity.decide_feedback({"feedback_id": first, "decision": "reject",
                                              "reason": "经核实，考试成绩未达合格线"})
        [decision] = tap.collect(1)
        assert decision["approved"] is False and decision["reason"] == "经核实，考试成绩未达合格线"
        with client(amqp_uri) as public:
            expect_error(lambda: public.identity.check_passer({"name": "张伟", "id_number": NEWCOMER_ID}),
                         "PASSER_NOT_FOUND")
            second = public.identity.submit_feedback(feedback_request(proof=None))   # may try again
        assert second["feedback_id"] != first
        assert bucket_keys(identity) == [f"feedback/{first}/proof.pdf"]
        # two officers decide the same feedback at once: exactly one decision wins
        other = token(keys_dir, Caller("officer-chaoyang", OFFICER, "110105", "county"))
        with client(amqp_uri, province) as one, client(amqp_uri, other) as two:
            replies = [one.identity.decide_feedback.call_async(
                           {"feedback_id": second["feedback_id"], "decision": "approve", "management_number": "9"}),
                       two.identity.decide_feedback.call_async(
                           {"feedback_id": second["feedback_id"], "decision": "reject", "reason": "材料不全"})]
            outcomes = [o["status"] if isinstance(o, dict) else o for o in results_or_codes(replies)]
        assert sorted(outcomes) in (["ALREADY_DECIDED", "approved"], ["ALREADY_DECIDED", "rejected"])
        assert len(tap.collect(1)) == 1 and tap.collect(1, timeout=1.0) == []
    finally:
        tap.close()


def test_a_proof_left_without_its_feedback_by_a_crash_is_swept(identity, amqp_uri):
    from services.identity import feedback as feedback_rules
    from swms.storage import Bucket

    with client(amqp_uri) as public:
        kept = public.identity.submit_feedback(feedback_request())["feedback_id"]
    bucket = Bucket(make_s3_client(identity), identity["IDENTITY_S3_BUCKET"])
    # What a process killed between storing the file and committing its row leaves behind.
    orphan = f"feedback/{uuid.uuid4()}/proof.pdf"
    bucket.put(orphan, PDF, "application/pdf", {})
    with session_for(identity["DB_URL"]) as session:
        assert feedback_rules.sweep_orphan_proofs(session, bucket, dt.timedelta(hours=1)) == []   # too recent
        swept = feedback_rules.sweep_orphan_proofs(session, bucket, dt.timedelta(seconds=-60))   # cut-off ahead
    assert swept == [orphan]
    assert bucket_keys(identity) == [f"feedback/{kept}/proof.pdf"]          # the named proof stays
    with session_for(identity["DB_URL"]) as session:
        assert [row["action"] for row in audit.for_entity(session, orphan.split("/")[1])] == ["feedback.proof_deleted"]


def test_login_refresh_logout_and_expired_tokens(identity, amqp_uri, keys_dir):
    with client(amqp_uri) as public:
        account = public.identity.sign_up(HOLDER_SIGN_UP)
        tokens = public.identity.login({"login": HOLDER_ID.lower(), "password": PASSWORD})
        assert tokens["refresh_token"].startswith("rt_") and tokens["role"] == "social_worker"
        # An access token cannot be revoked, so it is short-lived (15 minutes by default).
        lifetime = dt.datetime.fromisoformat(tokens["expires_at"]) - dt.datetime.now(dt.timezone.utc)
        assert dt.timedelta(minutes=14) < lifetime <= dt.timedelta(minutes=15)
        renewed = public.identity.refresh({"refresh_token": tokens["refresh_token"]})
        assert renewed["subject"] == account["person_id"] and renewed["refresh_token"] != tokens["refresh_token"]
        with client(amqp_uri, renewed["access_token"]) as own:
            assert own.identity.get_person({"person_id": account["person_id"]})["level"] == "助理社会工作师"
        # the spent token again: theft assumed, the whole family dies (the renewed one too)
        expect_error(lambda: public.identity.refresh({"refresh_token": tokens["refresh_token"]}),
                     "TOKEN_INVALID", "refresh_token")
        expect_error(lambda: public.identity.refresh({"refresh_token": renewed["refresh_token"]}),
                     "TOKEN_INVALID", "refresh_token")
        again = public.identity.login({"login": "li@example.cn", "password": PASSWORD})
        assert public.identity.logout({"refresh_token": again["refresh_token"]})["ok"] is True
        expect_error(lambda: public.identity.refresh({"refresh_token": again["refresh_token"]}),
                     "TOKEN_INVALID", "refresh_token")
    expired = token(keys_dir, Caller(account["person_id"], "social_worker"), dt.timedelta(seconds=-5))
    with client(amqp_uri, expired) as late:
        expect_error(lambda: late.identity.get_person({"person_id": account["person_id"]}), "TOKEN_EXPIRED", "auth_token")


def test_an_administrator_reads_a_person_only_with_a_reason_and_each_read_is_audited(identity, amqp_uri, keys_dir):
    """get_person answers the raw ID number and email: support staff must say why (access_reason),
    officers have no region to read it by, and other people are refused."""
    with client(amqp_uri) as public:
        account = public.identity.sign_up(HOLDER_SIGN_UP)
    person = {"person_id": account["person_id"]}
    with client(amqp_uri, token(keys_dir, Caller("admin-7", ADMIN))) as admin:
        expect_error(lambda: admin.identity.get_person(person), "VALIDATION_FAILED", "access_reason")
        expect_error(lambda: admin.identity.get_person(person | {"access_reason": " "}), "VALIDATION_FAILED",
                     "access_reason")
        read = admin.identity.get_person(person | {"access_reason": "工单 2026-1203"})
    assert read["id_number"] == HOLDER_ID
    for other in (token(keys_dir, Caller("o", OFFICER, "110105", "county")), worker_token(keys_dir, str(uuid.uuid4()))):
        with client(amqp_uri, other) as caller:
            expect_error(lambda: caller.identity.get_person(person), "FORBIDDEN")
    with session_for(identity["DB_URL"]) as session:
        [entry] = [row for row in audit.for_entity(session, account["person_id"])
                   if row["action"] == "personal_data.read_by_admin"]
    assert (entry["actor"], entry["detail"]) == ("admin-7", {"method": "get_person", "reason": "工单 2026-1203"})


@pytest.fixture
def strict_identity(start_service):
    """Identity with a low per-source login limit (LOGIN_SOURCE_MAX_FAILURES), to keep the test short."""
    return start_service("identity", IDENTITY_S3_BUCKET=f"identity-{uuid.uuid4().hex[:12]}",
                         LOGIN_SOURCE_MAX_FAILURES="8", LOGIN_LOCK_MINUTES="10")


def test_failed_logins_are_limited_per_account_and_per_source(strict_identity, amqp_uri):
    with session_for(strict_identity["DB_URL"]) as session:
        domain.import_passers(session, [{"name": "李明华", "id_number": HOLDER_ID, "level": "社会工作师",
                                         "management_number": "1", "exam_year": str(THIS_YEAR), "province": "11"}])
        session.commit()
    with client(amqp_uri) as public:
        public.identity.sign_up(HOLDER_SIGN_UP)
        for _ in range(5):   # by ID number and by email: one account, one counter
            expect_error(lambda: public.identity.login({"login": "li@example.cn", "password": "Wrong-pass-1"}),
                         "LOGIN_FAILED", "login")
        error = expect_error(lambda: public.identity.login({"login": HOLDER_ID, "password": PASSWORD}),
                             "RATE_LIMITED", "login")
        assert 540 <= int(error.details[0]["retry_after_seconds"]) <= 600   # Nameko sends error details as text
        # an unknown login locks the same way (a lock reveals nothing)
        for _ in range(5):
            expect_error(lambda: public.identity.login({"login": "ghost@example.cn", "password": "x"}), "LOGIN_FAILED")
        expect_error(lambda: public.identity.login({"login": "ghost@example.cn", "password": "x"}), "RATE_LIMITED")
    # per source: 8 failures from one address across many logins lock that address only
    with client(amqp_uri, client_ip="203.0.113.7") as attacker:
        for index in range(8):
            expect_error(lambda: attacker.identity.login({"login": f"u{index}@example.cn", "password": "x"}),
                         "LOGIN_FAILED")
        expect_error(lambda: attacker.identity.login({"login": "new@example.cn", "password": "x"}), "RATE_LIMITED")
    with client(amqp_uri, client_ip="198.51.100.1") as elsewhere:
        expect_error(lambda: elsewhere.identity.login({"login": "new@example.cn", "password": "x"}), "LOGIN_FAILED")


def confirmation_message(amqp_uri, keys_dir, event: dict) -> dict:
    """What notification fetches to mail the code of an ``email_confirmation_requested`` event."""
    with client(amqp_uri, token(keys_dir, Caller("notification", SERVICE))) as service:
        return service.identity.get_email_confirmation_message({"confirmation_id": event["confirmation_id"]})


def confirm_address(amqp_uri, keys_dir, confirmations: EventTap, person_id: str) -> None:
    """What the holder does with the code mailed at sign-up."""
    [event] = confirmations.collect(1)
    assert event["person_id"] == person_id
    code = confirmation_message(amqp_uri, keys_dir, event)["code"]
    with client(amqp_uri, worker_token(keys_dir, person_id)) as person:
        assert person.identity.confirm_email({"code": code})["email"] == "li@example.cn"


def test_email_address_confirmed_by_the_mailed_code(identity, amqp_uri, keys_dir):
    confirmations = EventTap(amqp_uri, "identity", "email_confirmation_requested")
    notification = token(keys_dir, Caller("notification", SERVICE))
    try:
        with client(amqp_uri) as public:
            account = public.identity.sign_up(HOLDER_SIGN_UP)
        [event] = confirmations.collect(1)
        assert event["person_id"] == account["person_id"]
        message = confirmation_message(amqp_uri, keys_dir, event)
        code = message["code"]
        assert message["email"] == "li@example.cn" and len(code) == 6 and code not in json.dumps(event)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        with client(amqp_uri, worker_token(keys_dir, account["person_id"])) as person:
            assert person.identity.get_person({"person_id": account["person_id"]})["email_confirmed"] is False
            expect_error(lambda: person.identity.get_email_confirmation_message(
                {"confirmation_id": event["confirmation_id"]}), "FORBIDDEN")
            expect_error(lambda: person.identity.confirm_email({"code": wrong}), "CONFIRMATION_CODE_INVALID", "code")
            expect_error(lambda: person.identity.confirm_email({"code": "12345"}), "VALIDATION_FAILED", "code")
            # a new code kills the first one
            assert person.identity.request_email_confirmation()["expires_in_seconds"] == 24 * 3600
            [again] = confirmations.collect(1)
            expect_error(lambda: person.identity.confirm_email({"code": code}), "CONFIRMATION_CODE_INVALID", "code")
            with client(amqp_uri, notification) as service:
                expect_error(lambda: service.identity.get_email_confirmation_message(
                    {"confirmation_id": event["confirmation_id"]}), "INVALID_STATE", "confirmation_id")
            code = confirmation_message(amqp_uri, keys_dir, again)["code"]
            # five wrong codes spend it: the right one no longer works
            for step in range(1, 6):
                expect_error(lambda: person.identity.confirm_email({"code": f"{(int(code) + step) % 1_000_000:06d}"}),
                             "CONFIRMATION_CODE_INVALID", "code")
            expect_error(lambda: person.identity.confirm_email({"code": code}), "CONFIRMATION_CODE_INVALID", "code")
            person.identity.request_email_confirmation()
            [third] = confirmations.collect(1)
            code = confirmation_message(amqp_uri, keys_dir, third)["code"]
            confirmed = person.identity.confirm_email({"code": code})
            assert confirmed["email"] == "li@example.cn"
            assert person.identity.get_person({"person_id": account["person_id"]})["email_confirmed"] is True
            expect_error(lambda: person.identity.confirm_email({"code": code}), "CONFIRMATION_CODE_INVALID", "code")
            expect_error(lambda: person.identity.request_email_confirmation(), "INVALID_STATE", "email")
        with session_for(identity["DB_URL"]) as session:
            actions = [row["action"] for row in audit.for_entity(session, account["person_id"])]
        assert actions.count("email_confirmation.requested") == 3 and actions.count("email.confirmed") == 1
    finally:
        confirmations.close()


def test_password_reset_by_emailed_code(identity, amqp_uri, keys_dir):
    tap = EventTap(amqp_uri, "identity", "password_reset_requested")
    confirmations = EventTap(amqp_uri, "identity", "email_confirmation_requested")
    notification = token(keys_dir, Caller("notification", SERVICE))
    try:
        with client(amqp_uri) as public:
            account = public.identity.sign_up(HOLDER_SIGN_UP)
            # Not before the address is confirmed: a mistyped address would receive the code.
            before = public.identity.request_password_reset({"login": "li@example.cn"})
            assert before["expires_in_seconds"] == 900 and tap.collect(1, timeout=1.0) == []
        confirm_address(amqp_uri, keys_dir, confirmations, account["person_id"])
        with client(amqp_uri) as public:
            for _ in range(5):   # the reset lifts the login lock too
                expect_error(lambda: public.identity.login({"login": HOLDER_ID, "password": "Wrong-pass-1"}),
                             "LOGIN_FAILED")
            answer = public.identity.request_password_reset({"login": "li@example.cn"})
            unknown = public.identity.request_password_reset({"login": "nobody@example.cn"})
            assert answer == unknown and answer["expires_in_seconds"] == 900
        [event] = tap.collect(1)
        assert event["person_id"] == account["person_id"]
        with client(amqp_uri, notification) as service:
            message = service.identity.get_password_reset_message({"reset_id": event["reset_id"]})
        code = message["code"]
        assert message["email"] == "li@example.cn" and len(code) == 6
        assert code not in json.dumps(event)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        with client(amqp_uri) as public:
            expect_error(lambda: public.identity.reset_password({"login": HOLDER_ID, "code": code,
                                                                 "new_password": "weakpassword"}),
                         "PASSWORD_TOO_WEAK", "new_password")
            expect_error(lambda: public.identity.reset_password({"login": HOLDER_ID, "code": wrong,
                                                                 "new_password": "New-secret-22"}),
                         "RESET_CODE_INVALID", "code")
            assert public.identity.reset_password({"login": HOLDER_ID, "code": code,
                                                   "new_password": "New-secret-22"})["ok"] is True
            expect_error(lambda: public.identity.reset_password({"login": HOLDER_ID, "code": code,
                                                                 "new_password": "New-secret-33"}),
                         "RESET_CODE_INVALID", "code")
            expect_error(lambda: public.identity.login({"login": HOLDER_ID, "password": PASSWORD}), "LOGIN_FAILED")
            assert public.identity.login({"login": HOLDER_ID, "password": "New-secret-22"})["subject"]
        with client(amqp_uri, notification) as service:
            expect_error(lambda: service.identity.get_password_reset_message({"reset_id": event["reset_id"]}),
                         "INVALID_STATE", "reset_id")
        with client(amqp_uri, worker_token(keys_dir, account["person_id"])) as person:
            expect_error(lambda: person.identity.get_password_reset_message({"reset_id": event["reset_id"]}),
                         "FORBIDDEN")
        # five wrong codes spend a reset: the right code no longer works
        with client(amqp_uri) as public:
            public.identity.request_password_reset({"login": HOLDER_ID})
            [event] = tap.collect(1)
            with client(amqp_uri, notification) as service:
                code = service.identity.get_password_reset_message({"reset_id": event["reset_id"]})["code"]
            for step in range(1, 6):
                wrong = f"{(int(code) + step) % 1_000_000:06d}"
                expect_error(lambda: public.identity.reset_password(
                    {"login": HOLDER_ID, "code": wrong, "new_password": "New-secret-33"}), "RESET_CODE_INVALID")
            expect_error(lambda: public.identity.reset_password(
                {"login": HOLDER_ID, "code": code, "new_password": "New-secret-33"}), "RESET_CODE_INVALID")
    finally:
        tap.close()
        confirmations.close()


def test_a_disabled_account_cannot_log_in_refresh_or_reset_until_enabled(identity, amqp_uri, keys_dir):
    """An administrator disables an account (cli disable-account: an officer who left, a stolen
    password). Only the right password learns that it is disabled; its refresh tokens die at once."""
    resets = EventTap(amqp_uri, "identity", "password_reset_requested")
    confirmations = EventTap(amqp_uri, "identity", "email_confirmation_requested")
    try:
        with client(amqp_uri) as public:
            account = public.identity.sign_up(HOLDER_SIGN_UP)
        confirm_address(amqp_uri, keys_dir, confirmations, account["person_id"])
        with client(amqp_uri) as public:
            tokens = public.identity.login({"login": HOLDER_ID, "password": PASSWORD})
        with session_for(identity["DB_URL"]) as session:
            _, changed = domain.disable_account(session, "LI@example.cn", "账号被盗，暂停使用", utcnow(),
                                                "admin-cli:test")
            session.commit()
        assert changed
        with client(amqp_uri) as public:
            expect_error(lambda: public.identity.login({"login": HOLDER_ID, "password": PASSWORD}),
                         "ACCOUNT_DISABLED", "login")
            expect_error(lambda: public.identity.login({"login": HOLDER_ID, "password": "Wrong-pass-1"}),
                         "LOGIN_FAILED", "login")
            expect_error(lambda: public.identity.refresh({"refresh_token": tokens["refresh_token"]}),
                         "TOKEN_INVALID", "refresh_token")
            answer = public.identity.request_password_reset({"login": "li@example.cn"})
            assert answer == public.identity.request_password_reset({"login": "nobody@example.cn"})
            assert resets.collect(1, timeout=1.5) == []
        with session_for(identity["DB_URL"]) as session:
            actions = [row["action"] for row in audit.for_entity(session, account["person_id"])]
            assert actions[-3:] == ["account.disabled", "login.refused_disabled", "login.failed"]
            assert audit.for_entity(session, account["person_id"])[-3]["actor"] == "admin-cli:test"
            assert domain.enable_account(session, HOLDER_ID, "admin-cli:test")[1]
            session.commit()
        with client(amqp_uri) as public:
            assert public.identity.login({"login": HOLDER_ID, "password": PASSWORD})["subject"] == account["person_id"]
    finally:
        resets.close()
        confirmations.close()


def test_an_administrator_disables_and_enables_an_account_over_rpc(identity, amqp_uri, keys_dir):
    """What the portal's 停用账号 screen calls: admin only, a reason each way, audited with the
    administrator as actor; the answer masks the login (no raw ID number)."""
    with session_for(identity["DB_URL"]) as session:
        admin_id = domain.create_admin(session, "系统管理员", "admin@example.gov.cn", "x").person_id
        session.commit()
    with client(amqp_uri) as public:
        account = public.identity.sign_up(HOLDER_SIGN_UP)
        tokens = public.identity.login({"login": HOLDER_ID, "password": PASSWORD})
    stop = {"login": HOLDER_ID, "reason": "账号被盗，暂停使用"}
    for other in (token(keys_dir, Caller("o", OFFICER, "110105", "county")), worker_token(keys_dir, account["person_id"])):
        with client(amqp_uri, other) as caller:
            expect_error(lambda: caller.identity.disable_account(stop), "FORBIDDEN")
    with client(amqp_uri, token(keys_dir, Caller(admin_id, ADMIN))) as admin:
        expect_error(lambda: admin.identity.disable_account({"login": HOLDER_ID}), "VALIDATION_FAILED", "reason")
        expect_error(lambda: admin.identity.disable_account({"login": HOLDER_ID, "reason": "  "}),
                     "VALIDATION_FAILED", "reason")
        expect_error(lambda: admin.identity.disable_account({"login": "nobody@example.cn", "reason": "离职"}),
                     "NOT_FOUND", "login")
        expect_error(lambda: admin.identity.disable_account({"login": "admin@example.gov.cn", "reason": "测试"}),
                     "INVALID_STATE", "login")
        state = admin.identity.disable_account(stop)
        assert HOLDER_ID not in json.dumps(state)
        assert (state["login_masked"], state["role"], state["disabled"], state["disabled_reason"], state["changed"]) == (
            "110***********" + HOLDER_ID[-4:], "social_worker", True, "账号被盗，暂停使用", True)
        assert state["person_id"] == account["person_id"] and state["disabled_at"]
        assert admin.identity.disable_account(stop)["changed"] is False
        with client(amqp_uri) as public:
            expect_error(lambda: public.identity.login({"login": HOLDER_ID, "password": PASSWORD}),
                         "ACCOUNT_DISABLED", "login")
            expect_error(lambda: public.identity.refresh({"refresh_token": tokens["refresh_token"]}), "TOKEN_INVALID")
        expect_error(lambda: admin.identity.enable_account({"login": "LI@example.cn"}), "VALIDATION_FAILED", "reason")
        state = admin.identity.enable_account({"login": "LI@example.cn", "reason": "已核实本人，恢复使用"})
        assert (state["login_masked"], state["disabled"], state["disabled_at"], state["changed"]) == (
            "l***@example.cn", False, None, True)
        assert admin.identity.enable_account({"login": HOLDER_ID, "reason": "重复操作"})["changed"] is False
    with client(amqp_uri) as public:
        assert public.identity.login({"login": HOLDER_ID, "password": PASSWORD})["subject"] == account["person_id"]
    with session_for(identity["DB_URL"]) as session:
        entries = {row["action"]: row for row in audit.for_entity(session, account["person_id"])}
    assert (entries["account.disabled"]["actor"], entries["account.disabled"]["detail"]["reason"]) == (
        admin_id, "账号被盗，暂停使用")
    assert (entries["account.enabled"]["actor"], entries["account.enabled"]["detail"]["reason"]) == (
        admin_id, "已核实本人，恢复使用")


def test_the_submitter_follows_a_feedback_by_its_id_and_id_number(identity, amqp_uri, keys_dir):
    """Public: both must match, a mismatch reads exactly as an unknown id, misses are limited per
    client address (20 an hour) and per feedback id (10 an hour)."""
    province = token(keys_dir, Caller("officer-beijing", OFFICER, "110000", "province"))
    with client(amqp_uri) as public:
        feedback_id = public.identity.submit_feedback(feedback_request(proof=None))["feedback_id"]
        mine = {"feedback_id": feedback_id, "id_number": NEWCOMER_ID}
        pending = public.identity.get_feedback_status(mine)
        assert (pending["status"], pending["decided_at"], pending["reason"]) == ("pending", None, None)
    with client(amqp_uri, province) as officer:
        officer.identity.decide_feedback({"feedback_id": feedback_id, "decision": "reject", "reason": "材料不全"})
    with client(amqp_uri) as public:
        rejected = public.identity.get_feedback_status(mine)
        assert (rejected["status"], rejected["reason"]) == ("rejected", "材料不全") and rejected["decided_at"]
        wrong_number = expect_error(lambda: public.identity.get_feedback_status(mine | {"id_number": HOLDER_ID}),
                                    "NOT_FOUND", "feedback_id")
        unknown = expect_error(lambda: public.identity.get_feedback_status(mine | {"feedback_id": str(uuid.uuid4())}),
                               "NOT_FOUND", "feedback_id")
        assert wrong_number.message == unknown.message
    with client(amqp_uri, client_ip="203.0.113.9") as walker:   # walking ids from one address
        for _ in range(20):
            expect_error(lambda: walker.identity.get_feedback_status(mine | {"feedback_id": str(uuid.uuid4())}),
                         "NOT_FOUND")
        expect_error(lambda: walker.identity.get_feedback_status(mine), "RATE_LIMITED", "feedback_id")
    with client(amqp_uri, client_ip="198.51.100.4") as guesser:   # guessing the ID number of a known id
        assert guesser.identity.get_feedback_status(mine)["status"] == "rejected"
        for _ in range(9):   # + the wrong number above: 10 misses on this id
            expect_error(lambda: guesser.identity.get_feedback_status(mine | {"id_number": HOLDER_ID}), "NOT_FOUND")
        expect_error(lambda: guesser.identity.get_feedback_status(mine), "RATE_LIMITED", "feedback_id")


def test_a_later_list_raises_the_level_of_a_registered_person(identity, amqp_uri, keys_dir):
    tap = EventTap(amqp_uri, "identity", "passer_level_raised")
    try:
        with client(amqp_uri) as public:
            account = public.identity.sign_up(HOLDER_SIGN_UP)
        csv_text = ("name,id_number,level,management_number,exam_year,province\n"
                    f"李明华,{HOLDER_ID},社会工作师,202611000000000002,{THIS_YEAR},北京\n")
        with session_for(identity["DB_URL"]) as session:
            report = domain.import_file(session, csv_text.encode("gb18030"))
            session.commit()
            again = domain.import_file(session, csv_text.encode("utf-8"))
            session.commit()
        assert (report.raised, report.events, again.unchanged, again.raised) == (1, 1, 1, 0)
        [event] = tap.collect(1)
        assert event["person_id"] == account["person_id"]
        assert (event["previous_level"], event["new_level"], event["exam_year"]) == ("助理社会工作师", "社会工作师", THIS_YEAR)
        with client(amqp_uri, worker_token(keys_dir, account["person_id"])) as own:
            person = own.identity.get_person({"person_id": account["person_id"]})
        assert (person["level"], person["management_number"]) == ("社会工作师", "202611000000000002")
        assert tap.collect(1, timeout=1.5) == []   # the re-import published nothing
    finally:
        tap.close()


def test_service_only_lookups_refuse_people_and_officers(identity, amqp_uri, keys_dir):
    any_id = str(uuid.uuid4())
    officer = token(keys_dir, Caller("o", OFFICER, "110105", "county"))
    admin = token(keys_dir, Caller("a", ADMIN))
    for bearer in (None, worker_token(keys_dir, any_id), officer, admin):
        with client(amqp_uri, bearer) as caller:
            code = "AUTH_REQUIRED" if bearer is None else "FORBIDDEN"
            expect_error(lambda: caller.identity.get_feedback_contact({"feedback_id": any_id}), code)
            expect_error(lambda: caller.identity.get_password_reset_message({"reset_id": any_id}), code)
            expect_error(lambda: caller.identity.list_officer_contacts({"region_code": "110105"}), code)
    with client(amqp_uri, worker_token(keys_dir, any_id)) as person:
        expect_error(lambda: person.identity.list_feedback({}), "FORBIDDEN")
    with client(amqp_uri, token(keys_dir, Caller("notification", SERVICE))) as service:
        expect_error(lambda: service.identity.get_feedback_contact({"feedback_id": any_id}), "NOT_FOUND", "feedback_id")
        expect_error(lambda: service.identity.get_password_reset_message({"reset_id": any_id}), "NOT_FOUND", "reset_id")


def test_no_full_id_number_in_logs_events_or_audit(identity, amqp_uri, keys_dir, caplog):
    """Logs are read as identity's handler writes them (through its redaction filter)."""
    from services.identity.redact import RedactIdNumbers

    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(RedactIdNumbers())
    taps = [EventTap(amqp_uri, "identity", kind) for kind in ("feedback_submitted", "email_confirmation_requested")]
    try:
        with client(amqp_uri, client_ip="192.0.2.10") as public:
            public.identity.sign_up(HOLDER_SIGN_UP)
            expect_error(lambda: public.identity.sign_up({"name": "李明华", "id_number": HOLDER_ID,
                                                          "email": "li2@example.cn", "password": PASSWORD}),
                         "ALREADY_REGISTERED")
            expect_error(lambda: public.identity.login({"login": HOLDER_ID, "password": "Wrong-pass-1"}), "LOGIN_FAILED")
            public.identity.login({"login": HOLDER_ID, "password": PASSWORD})
            public.identity.request_password_reset({"login": HOLDER_ID})
            public.identity.submit_feedback(feedback_request(proof=None))
        bodies = [body for tap in taps for body in tap.collect(1)]
        assert len(bodies) == 2
        with session_for(identity["DB_URL"]) as session:
            audit_text = json.dumps([dict(row) for row in session.execute(select(audit.table)).mappings()],
                                    default=str, ensure_ascii=False)
            assert session.execute(select(func.count()).select_from(Feedback)).scalar_one() == 1
        logged = "\n".join(caplog.handler.format(record) for record in caplog.records)
        for number in (HOLDER_ID, NEWCOMER_ID):
            assert number not in json.dumps(bodies, ensure_ascii=False)
            assert number not in audit_text
            assert number not in logged
        assert "110***********" + HOLDER_ID[-4:] in audit_text   # masked, plus a keyed hash
        assert "192.0.2.10" not in audit_text
    finally:
        for tap in taps:
            tap.close()


def test_identity_serves_logins_while_object_storage_is_away(start_service, amqp_uri):
    from tools.localstack import free_port

    config = start_service("identity", S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
                           IDENTITY_S3_BUCKET=f"identity-{uuid.uuid4().hex[:12]}")
    with session_for(config["DB_URL"]) as session:
        domain.import_passers(session, [{"name": "李明华", "id_number": HOLDER_ID, "level": "社会工作师",
                                         "management_number": "1", "exam_year": str(THIS_YEAR), "province": "11"}])
        session.commit()
    with client(amqp_uri) as public:
        health = public.identity.health()
        assert health["status"] == "degraded" and health["checks"]["database"] == "ok"
        assert health["checks"]["object_storage"].startswith("error")
        public.identity.sign_up(HOLDER_SIGN_UP)
        assert public.identity.login({"login": HOLDER_ID, "password": PASSWORD})["role"] == "social_worker"
        public.identity.submit_feedback(feedback_request(proof=None))    # no file: no storage needed
        expect_error(lambda: public.identity.submit_feedback(   # with a file: refused, nothing kept
            feedback_request(id_number=valid_id("11010519920415172"))), "UPSTREAM_UNAVAILABLE", "proof")
    with session_for(config["DB_URL"]) as session:
        assert session.execute(select(func.count()).select_from(Feedback)).scalar_one() == 1
