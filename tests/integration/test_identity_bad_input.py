"""Bad input to identity over real RPC (SQLite and PostgreSQL): every case is answered by a clear
error (stable code, the field at fault, a Chinese message) and stores nothing.

"Nothing" is checked after every case: the row counts of every identity table except the
rate-limit counters, the newest audit entry, and the objects in the proof bucket. Rate-limit
counters may move only for the cases marked ``counted`` (a wrong name for a registered ID number
counts towards that ID number's limit, by design).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import jwt
import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import func, select, text

from services.identity import domain, passwords
from services.identity.models import metadata
from swms.auth import OFFICER, SERVICE, SOCIAL_WORKER, Caller
from swms.devkeys import ensure_dev_keys
from swms.errors import SwmsError
from swms.storage import make_s3_client
from tests.support import session_for, token, valid_id

pytestmark = pytest.mark.integration

THIS_YEAR = dt.date.today().year
HOLDER_ID = valid_id("11010519900307123")      # in the registry, no account yet
MEMBER_ID = valid_id("44030519950612402")      # in the registry, with an account
NEWCOMER_ID = valid_id("11010519920415162")    # not in the registry
LONG = "长" * 10_000
PDF = b"%PDF-1.4\n%%EOF\n"
ANY_UUID = "00000000-0000-4000-8000-000000000000"

SIGN_UP = {"name": "李明华", "id_number": HOLDER_ID, "email": "li@example.cn", "password": "Strong-pass-1"}
CHECK = {"name": "李明华", "id_number": HOLDER_ID}
FEEDBACK = {"name": "张伟", "id_number": NEWCOMER_ID, "email": "zw@example.cn", "level": "社会工作师",
            "exam_year": THIS_YEAR, "region_code": "110105"}


def proof(**overrides):
    value = {"filename": "proof.pdf", "content_type": "application/pdf",
             "content_base64": base64.b64encode(PDF).decode()}
    value.update(overrides)
    return value


def with_(base: dict, **changes) -> dict:
    result = dict(base)
    for key, value in changes.items():
        if value is ...:
            result.pop(key, None)
        else:
            result[key] = value
    return result


# (label, method, payload, bearer, code, field, counted)
# bearer: None, "officer", "worker", "service", "forged", "expired", "garbage", "unsigned", "wrong_audience",
#         "tampered"
CASES = [
    # -- ID numbers (GB 11643-1999) ----------------------------------------------------------------
    ("id 17 characters", "check_passer", with_(CHECK, id_number=HOLDER_ID[:17]), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id 19 characters", "check_passer", with_(CHECK, id_number=HOLDER_ID + "1"), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id wrong check character", "check_passer", with_(CHECK, id_number="360426199101010072"), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id 30 February", "sign_up", with_(SIGN_UP, id_number=valid_id("11010519900230123")), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id month 13", "sign_up", with_(SIGN_UP, id_number=valid_id("11010519901307123")), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id born in the future", "sign_up", with_(SIGN_UP, id_number=valid_id(f"110105{THIS_YEAR + 1}0101123")), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id born before 1880", "check_passer", with_(CHECK, id_number=valid_id("11010518790101123")), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id with a letter", "check_passer", with_(CHECK, id_number="11010519900307123A"), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id with X inside", "check_passer", with_(CHECK, id_number="1101051990X3071239"), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id all zeros", "check_passer", with_(CHECK, id_number="0" * 18), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id with a space inside", "sign_up", with_(SIGN_UP, id_number=HOLDER_ID[:6] + " " + HOLDER_ID[6:]), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id in Arabic-Indic digits", "check_passer", with_(CHECK, id_number="١١٠١٠٥١٩٩٠٠٣٠٧١٢٣٩"), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id as a JSON number", "check_passer", with_(CHECK, id_number=110105199003071239), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id as a list", "sign_up", with_(SIGN_UP, id_number=[HOLDER_ID]), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id null", "check_passer", with_(CHECK, id_number=None), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id of 10,000 characters", "sign_up", with_(SIGN_UP, id_number="1" * 10_000), None, "ID_NUMBER_INVALID", "id_number", False),
    ("id not in the registry", "sign_up", with_(SIGN_UP, id_number=NEWCOMER_ID), None, "PASSER_NOT_FOUND", "id_number", False),
    # -- names ---------------------------------------------------------------------------------------
    ("name with emoji", "sign_up", with_(SIGN_UP, name="李明华😀"), None, "TEXT_CHARACTERS_NOT_ALLOWED", "name", False),
    ("name with HTML", "check_passer", with_(CHECK, name="<script>alert(1)</script>"), None, "TEXT_CHARACTERS_NOT_ALLOWED", "name", False),
    ("name with SQL", "sign_up", with_(SIGN_UP, name="李'; DROP TABLE passers;--"), None, "VALIDATION_FAILED", "name", False),
    ("name empty", "sign_up", with_(SIGN_UP, name=""), None, "VALIDATION_FAILED", "name", False),
    ("name of spaces only", "check_passer", with_(CHECK, name="   "), None, "VALIDATION_FAILED", "name", False),
    ("name of 10,000 characters", "sign_up", with_(SIGN_UP, name=LONG), None, "VALIDATION_FAILED", "name", False),
    ("name with digits", "check_passer", with_(CHECK, name="李明华2"), None, "VALIDATION_FAILED", "name", False),
    ("name with a line break", "sign_up", with_(SIGN_UP, name="李\n明华"), None, "TEXT_CHARACTERS_NOT_ALLOWED", "name", False),
    ("name with a zero-width space", "check_passer", with_(CHECK, name="李\u200b明华"), None, "TEXT_CHARACTERS_NOT_ALLOWED", "name", False),
    ("name with a right-to-left override", "check_passer", with_(CHECK, name="李\u202e华明"), None, "TEXT_CHARACTERS_NOT_ALLOWED", "name", False),
    ("name ending in a line break", "sign_up", with_(SIGN_UP, name="李明华\n"), None, "TEXT_CHARACTERS_NOT_ALLOWED", "name", False),
    ("name as a number", "sign_up", with_(SIGN_UP, name=123), None, "VALIDATION_FAILED", "name", False),
    ("name missing", "sign_up", with_(SIGN_UP, name=...), None, "VALIDATION_FAILED", "name", False),
    ("name with spaces, not the registry's", "sign_up", with_(SIGN_UP, name="李 明"), None, "NAME_MISMATCH", "name", True),
    # -- email, password, the request itself ---------------------------------------------------------
    ("email without @", "sign_up", with_(SIGN_UP, email="li.example.cn"), None, "VALIDATION_FAILED", "email", False),
    ("email of 10,000 characters", "sign_up", with_(SIGN_UP, email="a" * 10_000 + "@x.cn"), None, "VALIDATION_FAILED", "email", False),
    ("email with HTML", "sign_up", with_(SIGN_UP, email="<b>li</b>@example.cn"), None, "TEXT_CHARACTERS_NOT_ALLOWED", "email", False),
    ("email with a bidi isolate", "sign_up", with_(SIGN_UP, email="li\u2066@example.cn"), None, "TEXT_CHARACTERS_NOT_ALLOWED", "email", False),
    ("email as a list", "sign_up", with_(SIGN_UP, email=["li@example.cn"]), None, "VALIDATION_FAILED", "email", False),
    ("email already used", "sign_up", with_(SIGN_UP, email="member@example.cn"), None, "ALREADY_REGISTERED", "email", False),
    ("password of 7 characters", "sign_up", with_(SIGN_UP, password="Ab-1234"), None, "VALIDATION_FAILED", "password", False),
    ("password of 10,000 characters", "sign_up", with_(SIGN_UP, password="Aa-1" * 2500), None, "VALIDATION_FAILED", "password", False),
    ("password one class only", "sign_up", with_(SIGN_UP, password="onlylowercaseletters"), None, "PASSWORD_TOO_WEAK", "password", False),
    ("password holding the ID number", "sign_up", with_(SIGN_UP, password="Id-" + HOLDER_ID), None, "PASSWORD_TOO_WEAK", "password", False),
    ("password a common word", "sign_up", with_(SIGN_UP, password="Password-2026"), None, "PASSWORD_TOO_WEAK", "password", False),
    ("password as a number", "sign_up", with_(SIGN_UP, password=12345678901), None, "VALIDATION_FAILED", "password", False),
    ("unknown field", "sign_up", with_(SIGN_UP, is_admin=True), None, "VALIDATION_FAILED", "is_admin", False),
    ("payload a list", "sign_up", [SIGN_UP], None, "VALIDATION_FAILED", "payload", False),
    ("payload a string", "check_passer", json.dumps(CHECK), None, "VALIDATION_FAILED", "payload", False),
    ("payload a number", "login", 42, None, "VALIDATION_FAILED", "payload", False),
    ("payload empty", "sign_up", {}, None, "VALIDATION_FAILED", "name", False),
    # -- login, tokens, reset --------------------------------------------------------------------------
    ("login empty", "login", {"login": "", "password": "x"}, None, "VALIDATION_FAILED", "login", False),
    ("login of 10,000 characters", "login", {"login": LONG, "password": "x"}, None, "VALIDATION_FAILED", "login", False),
    ("login as a number", "login", {"login": 110105199003071239, "password": "x"}, None, "VALIDATION_FAILED", "login", False),
    ("login password missing", "login", {"login": "member@example.cn"}, None, "VALIDATION_FAILED", "password", False),
    ("refresh token made up", "refresh", {"refresh_token": "rt_" + "A" * 43}, None, "TOKEN_INVALID", "refresh_token", False),
    ("refresh token of 10,000 characters", "refresh", {"refresh_token": "r" * 10_000}, None, "VALIDATION_FAILED", "refresh_token", False),
    ("refresh token as an object", "refresh", {"refresh_token": {"token": "x"}}, None, "VALIDATION_FAILED", "refresh_token", False),
    ("reset code of 5 digits", "reset_password", {"login": MEMBER_ID, "code": "12345", "new_password": "New-secret-22"}, None, "VALIDATION_FAILED", "code", False),
    ("reset code with letters", "reset_password", {"login": MEMBER_ID, "code": "12345a", "new_password": "New-secret-22"}, None, "VALIDATION_FAILED", "code", False),
    ("reset code as a number", "reset_password", {"login": MEMBER_ID, "code": 123456, "new_password": "New-secret-22"}, None, "VALIDATION_FAILED", "code", False),
    ("reset code never issued", "reset_password", {"login": MEMBER_ID, "code": "123456", "new_password": "New-secret-22"}, None, "RESET_CODE_INVALID", "code", False),
    ("reset new password weak", "reset_password", {"login": MEMBER_ID, "code": "123456", "new_password": "abcdefghijk"}, None, "PASSWORD_TOO_WEAK", "new_password", False),
    ("confirm code of 5 digits", "confirm_email", {"code": "12345"}, "worker", "VALIDATION_FAILED", "code", False),
    ("confirm code with letters", "confirm_email", {"code": "12a456"}, "worker", "VALIDATION_FAILED", "code", False),
    ("confirm code as a number", "confirm_email", {"code": 123456}, "worker", "VALIDATION_FAILED", "code", False),
    ("confirm without a token", "confirm_email", {"code": "123456"}, None, "AUTH_REQUIRED", "auth_token", False),
    ("confirm by an officer", "confirm_email", {"code": "123456"}, "officer", "FORBIDDEN", None, False),
    ("confirmation message for a person", "get_email_confirmation_message", {"confirmation_id": ANY_UUID}, "worker", "FORBIDDEN", None, False),
    ("confirmation message never issued", "get_email_confirmation_message", {"confirmation_id": ANY_UUID}, "service", "NOT_FOUND", "confirmation_id", False),
    ("confirmation id not a UUID", "get_email_confirmation_message", {"confirmation_id": "1 OR 1=1"}, "service", "VALIDATION_FAILED", "confirmation_id", False),
    # -- 反馈 ---------------------------------------------------------------------------------------------
    ("feedback exam year as text", "submit_feedback", with_(FEEDBACK, exam_year=str(THIS_YEAR)), None, "VALIDATION_FAILED", "exam_year", False),
    ("feedback exam year 2007", "submit_feedback", with_(FEEDBACK, exam_year=2007), None, "VALIDATION_FAILED", "exam_year", False),
    ("feedback exam year next year", "submit_feedback", with_(FEEDBACK, exam_year=THIS_YEAR + 1), None, "VALIDATION_FAILED", "exam_year", False),
    ("feedback exam year a fraction", "submit_feedback", with_(FEEDBACK, exam_year=2020.5), None, "VALIDATION_FAILED", "exam_year", False),
    ("feedback exam year true", "submit_feedback", with_(FEEDBACK, exam_year=True), None, "VALIDATION_FAILED", "exam_year", False),
    ("feedback unknown level", "submit_feedback", with_(FEEDBACK, level="中级社会工作师"), None, "VALIDATION_FAILED", "level", False),
    ("feedback management number letters", "submit_feedback", with_(FEEDBACK, management_number="AB2026"), None, "VALIDATION_FAILED", "management_number", False),
    ("feedback management number 33 digits", "submit_feedback", with_(FEEDBACK, management_number="1" * 33), None, "VALIDATION_FAILED", "management_number", False),
    ("feedback note of 10,000 characters", "submit_feedback", with_(FEEDBACK, note=LONG), None, "VALIDATION_FAILED", "note", False),
    ("feedback region of 5 digits", "submit_feedback", with_(FEEDBACK, region_code="11010"), None, "VALIDATION_FAILED", "region_code", False),
    ("feedback name with HTML", "submit_feedback", with_(FEEDBACK, name="<img src=x onerror=alert(1)>"), None, "TEXT_CHARACTERS_NOT_ALLOWED", "name", False),
    ("feedback note with a NUL", "submit_feedback", with_(FEEDBACK, note="请核实\x00"), None, "TEXT_CHARACTERS_NOT_ALLOWED", "note", False),
    ("feedback proof file name with an override", "submit_feedback", with_(FEEDBACK, proof=proof(filename="证明\u202efdp.exe")), None, "TEXT_CHARACTERS_NOT_ALLOWED", "proof.filename", False),
    ("feedback for a registered person", "submit_feedback", with_(FEEDBACK, id_number=HOLDER_ID, name="李明华"), None, "ALREADY_IN_REGISTRY", "id_number", False),
    ("feedback proof not base64", "submit_feedback", with_(FEEDBACK, proof=proof(content_base64="###not base64###")), None, "VALIDATION_FAILED", "proof.content_base64", False),
    ("feedback proof not what it says", "submit_feedback", with_(FEEDBACK, proof=proof(content_type="image/png")), None, "FILE_TYPE_NOT_ALLOWED", "proof.content_type", False),
    ("feedback proof too large", "submit_feedback", with_(FEEDBACK, proof=proof(content_base64=base64.b64encode(PDF + b"0" * 2048).decode())), None, "FILE_TOO_LARGE", "proof.content_base64", False),
    ("feedback proof of type HTML", "submit_feedback", with_(FEEDBACK, proof=proof(content_type="text/html")), None, "VALIDATION_FAILED", "proof.content_type", False),
    ("feedback proof file name a path", "submit_feedback", with_(FEEDBACK, proof=proof(filename="../../etc/passwd")), None, "VALIDATION_FAILED", "proof.filename", False),
    ("feedback proof as text", "submit_feedback", with_(FEEDBACK, proof="JVBERi0xLjQK"), None, "VALIDATION_FAILED", "proof", False),
    # -- tokens and roles --------------------------------------------------------------------------------
    ("forged token", "list_feedback", {}, "forged", "TOKEN_INVALID", "auth_token", False),
    ("expired token", "list_feedback", {}, "expired", "TOKEN_EXPIRED", "auth_token", False),
    ("garbage token", "list_feedback", {}, "garbage", "TOKEN_INVALID", "auth_token", False),
    ("unsigned token (alg none)", "list_feedback", {}, "unsigned", "TOKEN_INVALID", "auth_token", False),
    ("token for another audience", "list_feedback", {}, "wrong_audience", "TOKEN_INVALID", "auth_token", False),
    ("token with a changed region", "list_feedback", {}, "tampered", "TOKEN_INVALID", "auth_token", False),
    ("no token", "list_feedback", {}, None, "AUTH_REQUIRED", "auth_token", False),
    ("social worker deciding feedback", "decide_feedback", {"feedback_id": ANY_UUID, "decision": "approve"}, "worker", "FORBIDDEN", None, False),
    ("decide on a made-up feedback", "decide_feedback", {"feedback_id": ANY_UUID, "decision": "approve", "management_number": "1"}, "officer", "NOT_FOUND", "feedback_id", False),
    ("decide feedback id not a UUID", "decide_feedback", {"feedback_id": "1 OR 1=1", "decision": "approve"}, "officer", "VALIDATION_FAILED", "feedback_id", False),
    ("decide reject without reason", "decide_feedback", {"feedback_id": ANY_UUID, "decision": "reject"}, "officer", "VALIDATION_FAILED", "reason", False),
    ("decide reason of 10,000 characters", "decide_feedback", {"feedback_id": ANY_UUID, "decision": "reject", "reason": LONG}, "officer", "VALIDATION_FAILED", "reason", False),
    ("decide reason with a right-to-left override", "decide_feedback", {"feedback_id": ANY_UUID, "decision": "reject", "reason": "查无此人\u202e"}, "officer", "TEXT_CHARACTERS_NOT_ALLOWED", "reason", False),
    ("decide reason with an emoji", "decide_feedback", {"feedback_id": ANY_UUID, "decision": "reject", "reason": "查无此人🙂"}, "officer", "TEXT_CHARACTERS_NOT_ALLOWED", "reason", False),
    ("decide unknown decision", "decide_feedback", {"feedback_id": ANY_UUID, "decision": "maybe"}, "officer", "VALIDATION_FAILED", "decision", False),
    ("list page size 0", "list_feedback", {"page_size": 0}, "officer", "VALIDATION_FAILED", "page_size", False),
    ("list page size as text", "list_feedback", {"page_size": "20"}, "officer", "VALIDATION_FAILED", "page_size", False),
    ("list unknown status", "list_feedback", {"status": "deleted"}, "officer", "VALIDATION_FAILED", "status", False),
    ("person id with SQL", "get_person", {"person_id": "'; DROP TABLE accounts;--"}, "service", "VALIDATION_FAILED", "person_id", False),
    ("officer contacts bad region", "list_officer_contacts", {"region_code": "11010X"}, "service", "VALIDATION_FAILED", "region_code", False),
    ("officer contacts bad level", "list_officer_contacts", {"region_code": "110105", "level": "ministry"}, "service", "VALIDATION_FAILED", "level", False),
    ("reset message id not a UUID", "get_password_reset_message", {"reset_id": "x"}, "service", "VALIDATION_FAILED", "reset_id", False),
]


@pytest.fixture
def identity(start_service):
    config = start_service("identity", IDENTITY_S3_BUCKET=f"identity-{uuid.uuid4().hex[:12]}",
                           FEEDBACK_PROOF_MAX_BYTES="1024")
    with session_for(config["DB_URL"]) as session:
        domain.import_passers(session, [
            {"name": "李明华", "id_number": HOLDER_ID, "level": "社会工作师", "management_number": "1",
             "exam_year": str(THIS_YEAR), "province": "11"},
            {"name": "王芳", "id_number": MEMBER_ID, "level": "社会工作师", "management_number": "2",
             "exam_year": str(THIS_YEAR), "province": "44"},
        ])
        from services.identity.settings import from_config
        domain.sign_up(session, from_config(config), "王芳", MEMBER_ID, "member@example.cn",
                       passwords.hasher.hash("Member-pass-1"))
        session.commit()
    return config


def bearer_token(kind: str | None, keys_dir, tmp_path) -> str | None:
    officer = Caller("officer-1", OFFICER, "110105", "county")
    if kind is None:
        return None
    if kind == "officer":
        return token(keys_dir, officer)
    if kind == "worker":
        return token(keys_dir, Caller(ANY_UUID, SOCIAL_WORKER))
    if kind == "service":
        return token(keys_dir, Caller("notification", SERVICE))
    if kind == "forged":
        return token(ensure_dev_keys(tmp_path / "forger"), officer)
    if kind == "expired":
        return token(keys_dir, officer, dt.timedelta(seconds=-30))
    if kind == "garbage":
        return "not.a.token"
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    claims = {"iss": "swms-identity", "aud": "swms", "sub": "officer-1", "role": "officer", "region": "110000",
              "lvl": "province", "iat": now, "exp": now + 600}
    if kind == "unsigned":
        return jwt.encode(claims, None, algorithm="none")
    if kind == "wrong_audience":
        return jwt.encode(claims | {"aud": "another-system"}, (keys_dir / "token-signing.pem").read_bytes(),
                          algorithm="EdDSA")
    if kind == "tampered":
        header, payload, signature = token(keys_dir, officer).split(".")
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        body["region"], body["lvl"] = "110000", "province"
        forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        return f"{header}.{forged}.{signature}"
    raise ValueError(kind)


def snapshot(config) -> dict:
    with session_for(config["DB_URL"]) as session:
        counts = {table.name: session.execute(select(func.count()).select_from(table)).scalar_one()
                  for table in metadata.sorted_tables if table.name != "throttles"}
        counts["last_audit"] = session.execute(text("SELECT max(id) FROM audit_log")).scalar()
        counts["throttles"] = session.execute(text("SELECT count(*), coalesce(sum(failures), 0) FROM throttles")).one()
    listing = make_s3_client(config).list_objects_v2(Bucket=config["IDENTITY_S3_BUCKET"])
    counts["objects"] = listing.get("KeyCount", 0)
    return counts


def test_at_least_fifty_bad_inputs_are_tested():
    assert len(CASES) >= 50
    assert len({case[0] for case in CASES}) == len(CASES)


def test_every_bad_input_gets_a_clear_error_and_stores_nothing(identity, amqp_uri, keys_dir, tmp_path):
    failures = []
    before = snapshot(identity)
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=20) as anonymous:
        proxies = {None: anonymous}
        for label, method, payload, bearer, code, field, counted in CASES:
            if bearer not in proxies:
                proxy = ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=20,
                                        context_data={"auth_token": bearer_token(bearer, keys_dir, tmp_path)})
                proxies[bearer] = (proxy, proxy.start())
            rpc = proxies[bearer] if bearer is None else proxies[bearer][1]
            try:
                getattr(rpc.identity, method)(payload)
            except SwmsError as error:
                # Nameko stringifies exception arguments on the wire: a field of None arrives as "None".
                got = (error.code, None if error.field == "None" else error.field)
                if got != (code, field) or not error.message:
                    failures.append(f"{label}: expected {(code, field)}, got {got} {error.message}")
            else:
                failures.append(f"{label}: accepted")
            after = snapshot(identity)
            if not counted:
                changed = {k for k in after if after[k] != before[k]}
            else:
                changed = {k for k in after if k != "throttles" and after[k] != before[k]}
            if changed:
                failures.append(f"{label}: stored something ({sorted(changed)})")
            before = after
        for bearer, entry in proxies.items():
            if bearer is not None:
                entry[0].stop()
    assert failures == []
