"""The HTTP gateway's pieces without a broker: the error table, the Nameko wire format, the route
table against the services' own contracts, and the committed OpenAPI document."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from services.gateway import problems
from services.gateway.operations import OPERATIONS
from services.gateway.problems import STATUS_BY_CODE, Problem
from services.gateway.rpc_client import amqp_url, decode_reply, encode_request
from swms import error_codes
from swms.config import REPO_ROOT
from tools.export_contracts import OPENAPI_FILE, openapi_text, rpc_methods

ALL_CODES = sorted(value for name, value in vars(error_codes).items() if name.isupper() and name == value)

# RPCs no person, officer or administrator calls (services' own lookups), and the public ones the
# verification page, /api/v1/public/* and /.well-known serve (services/gateway/public.py).
INTERNAL_RPCS = {"identity.get_feedback_contact", "identity.get_password_reset_message",
                 "identity.get_email_confirmation_message", "identity.list_officer_contacts",
                 "profile.get_snapshot", "profile.get_photo_link", "registration.get_issuance_data"}
PUBLIC_VERIFICATION_RPCS = {"certificate.verify_certificate", "certificate.get_signing_certificates",
                            "certificate.get_status_list"}


# -- error table ------------------------------------------------------------------------------

def test_every_code_has_one_status():
    assert [code for code in ALL_CODES if code not in STATUS_BY_CODE] == []


@pytest.mark.parametrize("code,status", [
    ("VALIDATION_FAILED", 422), ("ID_NUMBER_INVALID", 422), ("AUTH_REQUIRED", 401), ("TOKEN_EXPIRED", 401),
    ("TOKEN_INVALID", 401), ("FORBIDDEN", 403), ("NOT_FOUND", 404), ("INVALID_STATE", 409),
    ("ALREADY_DECIDED", 409), ("APPLICATION_ALREADY_OPEN", 409), ("FILE_TOO_LARGE", 413),
    ("REQUEST_TOO_LARGE", 413), ("RATE_LIMITED", 429), ("UPSTREAM_UNAVAILABLE", 503),
    ("UPSTREAM_TIMEOUT", 504), ("INTERNAL_ERROR", 500), ("METHOD_NOT_ALLOWED", 405)])
def test_status_of_code(code, status):
    assert Problem(code, "消息").status == status


def test_unknown_code_is_a_generic_500_that_echoes_nothing():
    problem = Problem("SOMETHING_NEW", "内部细节 services.x.y", "secret_field", [{"a": "b"}])
    body = problem.body("req-1", "/api/v1/x")
    assert (problem.status, body["code"], body["message"], body["field"], body["details"]) == (
        500, "INTERNAL_ERROR", problems.GENERIC_MESSAGE, None, [])
    assert "services.x" not in json.dumps(body, ensure_ascii=False)


def test_problem_body_is_rfc9457_with_the_four_values():
    body = Problem("PASSWORD_TOO_WEAK", "密码过于简单", "password",
                   [{"field": "password", "code": "PASSWORD_TOO_WEAK", "message": "密码过于简单"}]).body("r", "/p")
    assert body == {"type": "urn:swms:error:PASSWORD_TOO_WEAK", "title": "Unprocessable Entity", "status": 422,
                    "detail": "密码过于简单", "code": "PASSWORD_TOO_WEAK", "message": "密码过于简单",
                    "field": "password", "details": [{"field": "password", "code": "PASSWORD_TOO_WEAK",
                                                      "message": "密码过于简单"}],
                    "request_id": "r", "instance": "/p"}


def test_rate_limited_carries_retry_after_from_details():
    problem = Problem("RATE_LIMITED", "尝试次数过多", "login", [{"retry_after_seconds": "900"}])
    assert problem.headers() == {"Retry-After": "900"}
    assert Problem("RATE_LIMITED", "尝试次数过多").headers() == {"Retry-After": "60"}
    assert Problem("NOT_FOUND", "不存在").headers() == {}


# -- Nameko wire format -----------------------------------------------------------------------

def test_request_encoding():
    body, headers = encode_request({"name": "李明华"}, {"auth_token": "t", "client_ip": None,
                                                        "call_id_stack": ["req-1"]})
    assert json.loads(body) == {"args": [{"name": "李明华"}], "kwargs": {}}
    assert headers == {"nameko.auth_token": "t", "nameko.call_id_stack": ["req-1"]}
    assert json.loads(encode_request(None, {})[0]) == {"args": [], "kwargs": {}}


def test_amqp_url_from_kombu_uri():
    assert amqp_url("pyamqp://guest:guest@rabbitmq:5672/") == "amqp://guest:guest@rabbitmq:5672/"
    assert amqp_url("amqp://u:p@h/v") == "amqp://u:p@h/v"


def reply(error=None, result=None) -> bytes:
    return json.dumps({"result": result, "error": error}).encode()


def test_decode_result():
    assert decode_reply(reply(result={"ok": True})) == {"ok": True}


def test_decode_swms_error():
    error = {"exc_type": "SwmsError", "exc_path": "swms.errors.SwmsError", "value": "...",
             "exc_args": ["NOT_FOUND", "申请不存在", "application_id", []]}
    with pytest.raises(Problem) as caught:
        decode_reply(reply(error))
    assert (caught.value.code, caught.value.message, caught.value.field, caught.value.status) == (
        "NOT_FOUND", "申请不存在", "application_id", 404)


@pytest.mark.parametrize("field", ["", "None"])
def test_decode_swms_error_without_field(field):
    error = {"exc_type": "SwmsError", "exc_path": "swms.errors.SwmsError", "value": "",
             "exc_args": ["FORBIDDEN", "无权执行此操作", field, []]}
    with pytest.raises(Problem) as caught:
        decode_reply(reply(error))
    assert caught.value.field is None


@pytest.mark.parametrize("error", [
    {"exc_type": "MethodNotFound", "exc_path": "nameko.exceptions.MethodNotFound", "value": "get_x",
     "exc_args": ["get_x"]},
    {"exc_type": "IncorrectSignature", "exc_path": "nameko.exceptions.IncorrectSignature",
     "value": "too many positional arguments", "exc_args": []},
    {"exc_type": "KeyError", "exc_path": "builtins.KeyError", "value": "'secret'", "exc_args": ["secret"]},
    {"exc_type": "SwmsError", "exc_path": "swms.errors.SwmsError", "value": "", "exc_args": ["NEW_CODE", "新"]},
])
def test_decode_other_errors_as_generic_500(error):
    with pytest.raises(Problem) as caught:
        decode_reply(reply(error))
    body = json.dumps(caught.value.body("r", "/"), ensure_ascii=False)
    assert caught.value.status == 500 and caught.value.code == "INTERNAL_ERROR"
    for leak in (error["exc_type"], error["exc_path"], error["value"], *error["exc_args"]):
        assert not leak or leak not in body


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]"])
def test_decode_garbage_as_500(raw):
    with pytest.raises(Problem) as caught:
        decode_reply(raw)
    assert caught.value.status == 500


# -- the route table against the services ------------------------------------------------------

def test_each_route_uses_its_rpcs_own_models():
    methods = rpc_methods()
    for operation in OPERATIONS:
        spec = methods[operation.rpc]
        assert (operation.request, operation.response) == (spec["request"], spec["response"]), operation.rpc


def test_every_rpc_people_use_has_a_route():
    routed = {operation.rpc for operation in OPERATIONS}
    people_use = {name for name in rpc_methods() if not name.endswith(".health")} - INTERNAL_RPCS
    assert sorted(people_use - routed - PUBLIC_VERIFICATION_RPCS) == []
    assert routed & INTERNAL_RPCS == set()


def test_routes_are_unique():
    keys = [(operation.method, operation.route) for operation in OPERATIONS]
    assert len(keys) == len(set(keys))


def test_gateway_imports_neither_nameko_nor_eventlet():
    code = ("import sys, services.gateway.app, services.gateway.__main__; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('nameko', 'eventlet', 'kombu')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# -- OpenAPI ------------------------------------------------------------------------------------

def test_committed_openapi_document_is_current():
    assert OPENAPI_FILE.read_text(encoding="utf-8") == openapi_text(), "run: python -m tools.export_contracts"


def test_openapi_documents_every_error_as_problem_json():
    document = json.loads(openapi_text())
    assert document["openapi"].startswith("3.1")
    count = public = 0
    for methods in document["paths"].values():
        for entry in methods.values():
            count += 1
            public += entry["tags"] == ["public"]   # services/gateway/public.py: verification, trust anchor
            for status, response in entry["responses"].items():
                if status not in ("200", "304"):
                    assert list(response["content"]) == ["application/problem+json"], (entry["operationId"], status)
    assert (count - public, public) == (len(OPERATIONS), 7)   # + did.json and the status lists


# -- answers ------------------------------------------------------------------------------------

def test_naive_times_get_their_utc_zone_where_the_schema_says_date_time():
    from services.gateway.responses import with_zones

    components = {"Item": {"type": "object", "properties": {
        "at": {"type": "string", "format": "date-time"},
        "maybe": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
        "note": {"type": "string"}, "on": {"type": "string", "format": "date"}}}}
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}}}
    value = {"items": [{"at": "2026-12-03T12:34:56.123456", "maybe": "2026-12-03T12:34:56", "note": "2026-12-03T12:34:56",
                        "on": "2026-12-03"},
                       {"at": "2026-12-03T12:34:56+08:00", "maybe": None, "note": "x", "on": "2026-12-03"}]}
    assert with_zones(value, schema, components) == {"items": [
        {"at": "2026-12-03T12:34:56.123456Z", "maybe": "2026-12-03T12:34:56Z", "note": "2026-12-03T12:34:56",
         "on": "2026-12-03"},
        {"at": "2026-12-03T12:34:56+08:00", "maybe": None, "note": "x", "on": "2026-12-03"}]}


def test_every_gateway_variable_is_documented():
    from services.gateway.config import variables

    read = set(variables())   # what Settings.from_env reads, however it reads it
    text = (REPO_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = text[text.index("## gateway"):]
    assert len(read) >= 5 and sorted(v for v in read if f"`{v}`" not in section) == []
