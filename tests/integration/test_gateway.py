"""The gateway's RPC client against a real RabbitMQ vhost, with stand-in Nameko services named as
the real ones (so the real routes reach them): what reaches a service (payload, token, client
address, X-Request-ID as the correlation id), refusals, unexpected errors, a service that is not
running, one that is too slow, and a broken connection (one broker, or a list whose first node is
gone)."""
from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time

import pytest
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc

from swms.errors import SwmsError
from tools.localstack import PYTHON, REPO_ROOT, free_port, wait_until

pytestmark = pytest.mark.integration
SLOW_CALL_ARRIVED = threading.Event()


class WorkerContext(DependencyProvider):
    def get_dependency(self, worker_ctx):
        return worker_ctx


class StandInIdentity:
    name = "identity"
    worker_ctx = WorkerContext()

    @rpc
    def check_passer(self, payload):
        return {"payload": payload, "auth_token": self.worker_ctx.context_data.get("auth_token"),
                "client_ip": self.worker_ctx.context_data.get("client_ip"),
                "origin_call_id": self.worker_ctx.origin_call_id}

    @rpc(expected_exceptions=SwmsError)
    def login(self, payload):
        raise SwmsError("RATE_LIMITED", "尝试次数过多，请稍后再试", "login", [{"retry_after_seconds": 900}])

    @rpc(expected_exceptions=SwmsError)
    def sign_up(self, payload):
        raise SwmsError("A_CODE_FROM_THE_FUTURE", "新的规则", "email")

    @rpc
    def refresh(self, payload):
        raise KeyError("secret internal detail")

    @rpc
    def request_email_confirmation(self):
        SLOW_CALL_ARRIVED.set()
        time.sleep(4)      # slower than the gateway's timeout in these tests
        return {"sent": True}

    # logout is missing on purpose: nameko answers MethodNotFound


@pytest.fixture
def gateway_amqp_uri(rabbit_config, request):
    if getattr(request, "param", None) == "a dead node first":   # a cluster's list, its first node gone
        return f"pyamqp://guest:guest@127.0.0.1:{free_port()}/{rabbit_config['vhost']};{rabbit_config['AMQP_URI']}"
    return rabbit_config["AMQP_URI"]


@pytest.fixture
def gateway(rabbit_config, container_factory, gateway_amqp_uri):
    container = container_factory(StandInIdentity, rabbit_config)
    container.start()
    port = free_port()
    process = subprocess.Popen([PYTHON, "-m", "services.gateway"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT,
                               env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT),
                                    "AMQP_URI": gateway_amqp_uri, "GATEWAY_HOST": "127.0.0.1",
                                    "GATEWAY_PORT": str(port), "GATEWAY_RPC_TIMEOUT_SECONDS": "3"})
    try:
        wait_until(lambda: request(port, "GET", "/readyz")[0] == 200, timeout=30, what="gateway ready")
        yield port
    finally:
        process.terminate()
        process.wait(10)


def request(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
    except OSError:
        return 0, {}, {}
    finally:
        connection.close()
    content = json.loads(raw) if raw and response.getheader("Content-Type", "").endswith("json") else raw
    return response.status, dict(response.getheaders()), content


def valid_check():
    from swms.idcard import check_character
    return {"name": "李明华", "id_number": "11010519900307123" + check_character("11010519900307123")}


def test_payload_token_address_and_request_id_reach_the_service(gateway):
    status, headers, body = request(gateway, "POST", "/api/v1/passers/check", valid_check(),
                                    {"Authorization": "Bearer abc.def.ghi", "X-Request-ID": "front-end-42"})
    assert status == 200
    assert body == {"payload": valid_check(), "auth_token": "abc.def.ghi", "client_ip": "127.0.0.1",
                    "origin_call_id": "front-end-42"}   # what services log as the correlation id
    assert headers["x-request-id"] == "front-end-42"


def test_refusal_keeps_code_message_field_details_and_retry_after(gateway):
    status, headers, body = request(gateway, "POST", "/api/v1/sessions", {"login": "a", "password": "b"})
    assert status == 429 and headers["retry-after"] == "900"
    assert headers["content-type"] == "application/problem+json"
    assert (body["code"], body["message"], body["detail"], body["field"]) == (
        "RATE_LIMITED", "尝试次数过多，请稍后再试", "尝试次数过多，请稍后再试", "login")
    assert body["details"] == [{"retry_after_seconds": "900"}]


@pytest.mark.parametrize("path,body", [
    ("/api/v1/sessions/refresh", {"refresh_token": "x"}),      # the service raised KeyError
    ("/api/v1/sessions/logout", {"refresh_token": "x"}),       # MethodNotFound
    ("/api/v1/accounts", {"name": "李明华", "id_number": valid_check()["id_number"], "email": "a@b.cn",
                          "password": "Aa1!aaaaaaaa"}),         # a code this gateway does not know
])
def test_unexpected_errors_are_a_generic_500(gateway, path, body):
    status, _, problem = request(gateway, "POST", path, body)
    assert (status, problem["code"], problem["message"]) == (500, "INTERNAL_ERROR", "系统错误，请稍后重试")
    text = json.dumps(problem, ensure_ascii=False)
    for leak in ("KeyError", "secret", "MethodNotFound", "identity.logout", "A_CODE_FROM_THE_FUTURE", "新的规则",
                 "nameko"):
        assert leak not in text


def test_service_not_running_is_503_at_once_not_a_timeout(gateway):
    status, headers, problem = request(gateway, "GET", "/api/v1/me/registration", headers={"Authorization": "Bearer a.b.c"})
    assert (status, problem["code"]) == (503, "UPSTREAM_UNAVAILABLE")   # a timeout would be 504
    assert headers["retry-after"] == "5"


def test_slow_service_is_504(gateway):
    status, _, problem = request(gateway, "POST", "/api/v1/me/email/confirmation-code",
                                 headers={"Authorization": "Bearer a.b.c"})
    assert (status, problem["code"], problem["message"]) == (504, "UPSTREAM_TIMEOUT", "系统响应超时，请稍后重试")


@pytest.mark.parametrize("gateway_amqp_uri", ["one broker", "a dead node first"], indirect=True)
def test_lost_connection_fails_calls_in_flight_and_comes_back(gateway, rabbit_config, rabbit_manager):
    outcome = {}

    def slow_call():
        outcome["answer"] = request(gateway, "POST", "/api/v1/me/email/confirmation-code",
                                    headers={"Authorization": "Bearer a.b.c"})
    vhost = rabbit_config["vhost"]

    def gateway_connections():
        return [c["name"] for c in rabbit_manager.get_connections()
                if c.get("vhost") == vhost and (c.get("client_properties") or {}).get("connection_name") == "swms-gateway"]
    # The management API lists a new connection only after its next statistics tick (~5 s).
    names = wait_until(gateway_connections, timeout=30, what="the gateway's AMQP connection")
    SLOW_CALL_ARRIVED.clear()
    thread = threading.Thread(target=slow_call)
    thread.start()
    assert SLOW_CALL_ARRIVED.wait(20)          # the call is in flight: its reply is awaited
    for name in names:
        rabbit_manager.delete_connection(name)
    thread.join(30)
    status, _, problem = outcome["answer"]
    assert (status, problem["code"]) == (503, "UPSTREAM_UNAVAILABLE")
    # The client connects again (past the dead node, if any), with a new reply queue: ready and answering.
    wait_until(lambda: request(gateway, "GET", "/readyz")[0] == 200, timeout=30, what="ready again")
    assert wait_until(lambda: request(gateway, "POST", "/api/v1/passers/check", valid_check())[0] == 200,
                      timeout=30, what="calls answered again")
