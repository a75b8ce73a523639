"""The gateway's HTTP layer in process, with a stand-in for the RPC client (no broker): what it
sends upstream for each kind of route, and the operations endpoints and the contract pages."""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import DOCS_PAGE, create_app
from services.gateway.config import Settings
from services.gateway.problems import Problem

U = "0b1d7a2e-1c33-4c52-9a4e-6f8d2b7e9a01"
AUTH = {"Authorization": "Bearer abc.def.ghi"}


class FakeRpc:
    def __init__(self):
        self.calls, self.ready, self.answer, self.error = [], True, {}, None

    async def start(self):
        pass

    async def close(self):
        pass

    async def call(self, rpc, payload, context, timeout=None):
        self.calls.append((rpc, payload, context))
        if self.error:
            raise self.error
        return self.answer


@pytest.fixture
def gateway():
    rpc = FakeRpc()
    with TestClient(create_app(Settings(), rpc=rpc), client=("203.0.113.9", 5000)) as client:
        client.rpc = rpc
        yield client


def test_body_route_merges_path_fields_and_forwards_the_body_as_sent(gateway):
    response = gateway.post(f"/api/v1/review/items/{U}/decision", json={"decision": "approve"},
                            headers={**AUTH, "X-Request-ID": "req-7"})
    assert response.status_code == 200
    assert gateway.rpc.calls == [("review.decide", {"item_id": U, "decision": "approve"},
                                  {"auth_token": "abc.def.ghi", "client_ip": "203.0.113.9",
                                   "call_id_stack": ["req-7"]})]
    assert response.headers["X-Request-ID"] == "req-7"


def test_query_route_sends_the_contracts_json_types(gateway):
    gateway.get("/api/v1/feedback?page=2&page_size=50&status=approved", headers=AUTH)
    gateway.get("/api/v1/notification/failures?include_retrying=false&limit=5", headers=AUTH)
    assert [payload for _, payload, _ in gateway.rpc.calls] == [
        {"page": 2, "page_size": 50, "status": "approved"}, {"include_retrying": False, "limit": 5}]


def test_route_without_input_sends_no_argument(gateway):
    gateway.get("/api/v1/me/registration", headers=AUTH)
    assert gateway.rpc.calls[0][:2] == ("registration.my_registration", None)


def test_public_route_needs_no_token_and_passes_none(gateway):
    gateway.post("/api/v1/password-resets", json={"login": "someone@example.cn"})
    assert gateway.rpc.calls[0][2]["auth_token"] is None


def test_nothing_is_sent_upstream_for_refused_input(gateway):
    assert gateway.post("/api/v1/sessions", content=b"{", headers={"Content-Type": "application/json"}).status_code == 422
    assert gateway.get("/api/v1/me/applications").status_code == 401
    assert gateway.post("/api/v1/sessions", content=b"x" * 70000,
                        headers={"Content-Type": "application/json"}).status_code == 413
    assert gateway.rpc.calls == []


def test_upstream_problem_is_rendered_with_the_http_name_of_the_token_field(gateway):
    gateway.rpc.error = Problem("TOKEN_EXPIRED", "登录已过期，请重新登录", "auth_token")
    response = gateway.get("/api/v1/me/applications", headers=AUTH)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["field"] == "Authorization"


def test_unhandled_exception_is_a_generic_500(gateway):
    gateway.rpc.error = RuntimeError("database password is hunter2")
    response = gateway.get("/api/v1/me/applications", headers=AUTH)
    assert (response.status_code, response.json()["code"]) == (500, "INTERNAL_ERROR")
    assert "hunter2" not in response.text and "RuntimeError" not in response.text


def test_readyz_follows_the_rpc_client(gateway):
    assert gateway.get("/readyz").status_code == 200
    gateway.rpc.ready = False
    assert gateway.get("/readyz").status_code == 503
    assert gateway.get("/healthz").status_code == 200


def test_metrics_count_by_route_template_never_the_raw_path(gateway):
    gateway.get(f"/api/v1/applications/{U}", headers=AUTH)
    text = gateway.get("/metrics").text
    assert 'swms_gateway_requests_total{method="GET",route="/api/v1/applications/{application_id}",status="200"} 1.0' in text
    assert U not in text
    assert "swms_gateway_upstream_seconds" in text


def test_openapi_and_a_docs_page_with_no_outside_assets(gateway):
    assert gateway.get("/api/openapi.json").json()["openapi"] == "3.1.0"
    page = gateway.get("/api/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', DOCS_PAGE)
    assert sources and all(source.startswith("/api/docs/assets/") for source in sources)
    for source in sources:
        assert gateway.get(source).status_code == 200, source
