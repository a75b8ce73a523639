"""The gateway's edge and public routes in process, with a stand-in for the RPC client: the client
address behind trusted proxies, rate limits, CORS, security and cache headers, the verification
page and its JSON twin, the trust anchor and its cache. (Over the real services: tests/e2e.)"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient

from services.certificate import signing, tokens
from services.gateway import openapi
from services.gateway.app import create_app
from services.gateway.config import Settings, variables
from services.gateway.edge import RateLimiter, TrustedProxies
from services.gateway.problems import Problem
from tests.unit.test_gateway_http import FakeRpc

NUMBER = "1120262000001"
RESULT = {"genuine": True, "status": "current", "status_label": "有效", "reason": None, "certificate_number": NUMBER,
          "holder_name_masked": "李**", "level": "社会工作师", "authority": "北京市民政局",
          "valid_from": "2026-03-01", "valid_until": "2029-02-28", "issued_on": "2026-03-01", "superseded_by": None,
          "checked_at": "2026-03-02T08:00:00Z"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class StubRpc(FakeRpc):
    """Answers per RPC name: a value, a Problem to raise, or a callable of the payload."""

    def __init__(self, answers=None):
        super().__init__()
        self.answers = dict(answers or {})

    async def call(self, rpc, payload, context, timeout=None):
        self.calls.append((rpc, payload, context))
        answer = self.answers.get(rpc, {})
        if isinstance(answer, Problem):
            raise answer
        return answer(payload) if callable(answer) else answer


@pytest.fixture(scope="module")
def keys():
    material = signing.generate_dev_ca("中华人民共和国民政部")
    qr_private = tokens.generate_token_key()
    published = {"signing_certificate_pem": material.cert_pem.decode(), "chain_pem": material.chain_pem.decode(),
                 "signer_fingerprint": material.fingerprint, "qr_token_public_key_pem": tokens.public_pem(qr_private),
                 "development_keys": True}
    return material, qr_private, published


def gateway(rpc=None, client=("198.51.100.7", 40000), **settings) -> TestClient:
    rpc = rpc or StubRpc({"certificate.verify_certificate": RESULT})
    app = create_app(Settings(**settings), rpc=rpc)
    test_client = TestClient(app, client=client)
    test_client.rpc = rpc
    return test_client


# -- the client address -----------------------------------------------------------------------

PROXIES = TrustedProxies(("10.0.0.0/8", "2001:db8::/32"))


@pytest.mark.parametrize("peer,forwarded,expected", [
    ("198.51.100.7", ["203.0.113.5"], "198.51.100.7"),                   # peer not a proxy: header ignored
    ("10.1.2.3", ["203.0.113.5"], "203.0.113.5"),                        # from the ingress
    ("10.1.2.3", [], "10.1.2.3"),                                        # no header: the peer itself
    ("10.1.2.3", ["6.6.6.6, 203.0.113.5"], "203.0.113.5"),              # what the client wrote is not believed
    ("10.1.2.3", ["6.6.6.6", "203.0.113.5, 10.9.9.9"], "203.0.113.5"),  # two headers, two proxies
    ("10.1.2.3", ["203.0.113.5:5123"], "203.0.113.5"),
    ("10.1.2.3", ["[2001:db9::1]:443"], "2001:db9::1"),
    ("2001:db8::5", ["2001:db9::1"], "2001:db9::1"),
    ("10.1.2.3", ["203.0.113.5, garbage"], "10.1.2.3"),                 # garbage from a trusted hop
    ("10.1.2.3", ["10.4.4.4"], "10.1.2.3"),                              # all hops inside
])
def test_client_address_from_x_forwarded_for(peer, forwarded, expected):
    assert PROXIES.client(peer, forwarded) == expected


def test_no_trusted_proxies_means_the_header_is_never_read():
    assert TrustedProxies(()).client("10.1.2.3", ["203.0.113.5"]) == "10.1.2.3"


@pytest.mark.parametrize("trusted,expected", [((), "10.1.2.3"), (("10.0.0.0/8",), "203.0.113.5")])
def test_services_get_the_resolved_address_as_client_ip(trusted, expected):
    with gateway(client=("10.1.2.3", 5000), trusted_proxies=trusted) as client:
        client.get("/api/v1/public/verifications", params={"t": "x"}, headers={"X-Forwarded-For": "203.0.113.5"})
        client.get("/api/v1/me/applications", headers={"Authorization": "Bearer a.b.c",
                                                       "X-Forwarded-For": "203.0.113.5"})
    assert [context["client_ip"] for _, _, context in client.rpc.calls] == [expected, expected]


# -- rate limits ----------------------------------------------------------------------------------

def limiter(**settings) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(Settings(**settings), clock=clock), clock


def test_token_bucket_per_address():
    limits, clock = limiter(rate_per_address=0.5, burst_per_address=3)
    assert [limits.admit("a") for _ in range(4)] == [None, None, None, 2]
    assert limits.admit("b") is None           # another address has its own bucket
    clock.now += 1.0
    assert limits.admit("a") == 1              # half a token back: one more second
    clock.now += 1.0
    assert limits.admit("a") is None


def test_total_bucket_refuses_everyone():
    limits, clock = limiter(rate_total=2, burst_total=2)
    assert [limits.admit(address) for address in "abc"] == [None, None, 1]
    clock.now += 0.5
    assert limits.admit("d") is None


def test_refused_requests_cost_nothing_and_idle_addresses_are_forgotten():
    limits, clock = limiter(rate_per_address=1, burst_per_address=1, rate_total=1000, burst_total=10)
    limits.max_addresses = 2
    assert limits.admit("a") is None and limits.admit("a") == 1 and limits.admit("a") == 1
    assert limits.total.tokens == 9            # only the admitted request counted in all
    limits.admit("b"), limits.admit("c")
    assert list(limits.buckets) == ["b", "c"]


def test_over_the_limit_is_429_problem_json_with_retry_after():
    with gateway(rate_per_address=0.1, burst_per_address=2) as client:
        answers = [client.get("/api/v1/public/verifications", params={"t": "x"}) for _ in range(3)]
        probes = [client.get(path).status_code for path in ("/healthz", "/metrics")]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[2]
    body = refused.json()
    assert refused.headers["content-type"] == "application/problem+json"
    assert (body["code"], body["status"], refused.headers["retry-after"]) == ("RATE_LIMITED", 429, "10")
    assert body["request_id"] == refused.headers["x-request-id"] and re.search(r"[\u4e00-\u9fff]", body["message"])
    assert refused.headers["cache-control"] == "no-store"
    assert len(client.rpc.calls) == 2 and probes == [200, 200]


def test_rate_limit_follows_the_forwarded_address_from_a_trusted_proxy():
    with gateway(client=("10.1.2.3", 5000), trusted_proxies=("10.0.0.0/8",), rate_per_address=0.1,
                 burst_per_address=1) as client:
        first = client.get("/verify", headers={"X-Forwarded-For": "203.0.113.5"})
        again = client.get("/verify", headers={"X-Forwarded-For": "203.0.113.5"})
        other = client.get("/verify", headers={"X-Forwarded-For": "203.0.113.6"})
    assert (first.status_code, again.status_code, other.status_code) == (200, 429, 200)


def test_upstream_rate_limited_is_429_with_its_retry_after_on_json_and_page():
    refusal = Problem("RATE_LIMITED", "核验次数过多，请稍后再试", "token", [{"retry_after_seconds": "420"}])
    with gateway(StubRpc({"certificate.verify_certificate": refusal})) as client:
        as_json = client.get("/api/v1/public/verifications", params={"t": "x"})
        as_page = client.get("/verify", params={"t": "x"})
    assert (as_json.status_code, as_json.headers["retry-after"], as_json.json()["field"]) == (429, "420", "token")
    assert (as_page.status_code, as_page.headers["retry-after"]) == (429, "420")
    assert "查询过于频繁" in as_page.text and "420 秒" in as_page.text


# -- headers ----------------------------------------------------------------------------------------

SECURITY = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY",
            "strict-transport-security": "max-age=31536000; includeSubDomains"}


def test_security_headers_on_json_problems_and_pages():
    with gateway() as client:
        answers = {"json": client.get("/api/v1/public/verifications", params={"t": "x"}),
                   "problem": client.get("/api/v1/nothing-here"),
                   "page": client.get("/verify", params={"t": "x"}),
                   "health": client.get("/healthz")}
    for name, answer in answers.items():
        assert {k: answer.headers.get(k) for k in SECURITY} == SECURITY, name
    for name in ("json", "problem", "health"):
        assert answers[name].headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    for name in ("json", "problem", "page"):
        assert answers[name].headers["cache-control"] == "no-store", name


def test_page_csp_allows_its_own_style_and_nothing_else():
    with gateway() as client:
        page = client.get("/verify", params={"t": "x"})
    csp = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    style = re.search(r"<style>(.*?)</style>", page.text, re.S).group(1)
    assert csp["style-src"] == f"'sha256-{base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()}'"
    assert (csp["default-src"], csp["form-action"], csp["frame-ancestors"]) == ("'none'", "'self'", "'none'")
    assert "<script" not in page.text and not re.search(r"(src|href)=\"(https?:)?//", page.text)


def test_hsts_can_be_turned_off():
    with gateway(hsts_seconds=0) as client:
        assert "strict-transport-security" not in client.get("/healthz").headers


def test_hostile_request_id_is_replaced():
    with gateway() as client:
        kept = client.get("/healthz", headers={"X-Request-ID": "mine-0001"})
        replaced = client.get("/healthz", headers={"X-Request-ID": "<script>" + "a" * 200})
    assert kept.headers["x-request-id"] == "mine-0001"
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])


# -- CORS -------------------------------------------------------------------------------------------

PREFLIGHT = {"Origin": "https://portal.example.gov.cn", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}


def test_cors_refused_by_default():
    with gateway() as client:
        preflight = client.options("/api/v1/public/verifications", headers=PREFLIGHT)
        simple = client.get("/api/v1/public/verifications", params={"t": "x"},
                            headers={"Origin": "https://portal.example.gov.cn"})
    assert preflight.status_code == 403 and preflight.json()["code"] == "FORBIDDEN"
    assert "access-control-allow-origin" not in preflight.headers
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def test_cors_allowed_for_configured_origins_only():
    with gateway(cors_origins=("https://portal.example.gov.cn",)) as client:
        preflight = client.options("/api/v1/public/verifications", headers=PREFLIGHT)
        allowed = client.get("/api/v1/public/verifications", params={"t": "x"},
                             headers={"Origin": "https://portal.example.gov.cn"})
        other = client.get("/api/v1/public/verifications", params={"t": "x"},
                           headers={"Origin": "https://evil.example.com"})
        other_preflight = client.options("/api/v1/public/verifications",
                                         headers={**PREFLIGHT, "Origin": "https://evil.example.com"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://portal.example.gov.cn"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    assert allowed.headers["access-control-allow-origin"] == "https://portal.example.gov.cn"
    assert "X-Request-ID" in allowed.headers["access-control-expose-headers"]
    assert "Origin" in allowed.headers["vary"]
    assert "access-control-allow-origin" not in other.headers
    assert other_preflight.status_code == 403 and "access-control-allow-origin" not in other_preflight.headers


# -- the verification page and its JSON ----------------------------------------------------------------

@pytest.mark.parametrize("status,label,reason,says", [
    ("current", "有效", None, "有效"),
    ("suspended", "已暂停", "正在调查", "已暂停（正在调查）"),
    ("revoked", "已撤销", "以欺骗手段取得登记", "已撤销（以欺骗手段取得登记）"),
    ("expired", "已过期", None, "已过期"),
    ("superseded", "已换发", None, "已换发"),
])
def test_page_says_the_status_plainly_with_only_the_four_facts(status, label, reason, says):
    result = {**RESULT, "status": status, "status_label": label, "reason": reason,
              "superseded_by": "1120262000002" if status == "superseded" else None}
    with gateway(StubRpc({"certificate.verify_certificate": result})) as client:
        page = client.get("/verify", params={"t": "1120262000001.sig"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    section = re.search(r'<section class="result[^"]*" id="result">(.*?)</section>', page.text, re.S).group(1)
    assert re.search(r'<p class="verdict">(.*?)</p>', section).group(1) == says
    facts = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", section))
    assert facts == {"持证人": "李**", "职业水平": "社会工作师", "有效期": "2026年3月1日至2029年2月28日",
                     "发证机关": "北京市民政局"}
    for absent in (NUMBER, "1120262000002", "2026-03-02", "genuine"):
        assert absent not in page.text
    assert client.rpc.calls[0][:2] == ("certificate.verify_certificate", {"token": "1120262000001.sig"})


def test_page_escapes_what_the_service_says():
    result = {**RESULT, "status": "revoked", "status_label": "已撤销", "reason": "<script>alert(1)</script>",
              "authority": "A&B"}
    with gateway(StubRpc({"certificate.verify_certificate": result})) as client:
        page = client.get("/verify", params={"t": "x"}).text
    assert "<script>" not in page and "&lt;script&gt;" in page and "A&amp;B" in page


def test_page_without_token_is_the_form_with_the_trust_anchor_links():
    with gateway() as client:
        page = client.get("/verify")
    assert page.status_code == 200 and 'id="result"' not in page.text
    assert '<form method="post" action="/verify">' in page.text
    assert 'href="/.well-known/swms/signing-chain.pem"' in page.text
    assert 'href="/.well-known/swms/qr-token-key.jwk"' in page.text
    assert client.rpc.calls == []


@pytest.mark.parametrize("code,status,title", [
    ("NOT_FOUND", 404, "未找到该证书"), ("VERIFICATION_TOKEN_FORGED", 422, "核验码无效"),
    ("UPSTREAM_TIMEOUT", 504, "暂时无法核验"), ("UPSTREAM_UNAVAILABLE", 503, "暂时无法核验")])
def test_page_refusals(code, status, title):
    refusal = Problem(code, "服务的说明", "token")
    with gateway(StubRpc({"certificate.verify_certificate": refusal})) as client:
        page = client.get("/verify", params={"t": "x"})
        as_json = client.get("/api/v1/public/verifications", params={"t": "x"})
    assert page.status_code == status and f'<p class="verdict">{title}</p>' in page.text
    assert as_json.status_code == status and as_json.json()["code"] == code


def test_form_posts_number_and_name_and_the_json_twin_takes_the_same():
    with gateway() as client:
        page = client.post("/verify", data={"certificate_number": " 11 2026 2 000001 ", "holder_name": " 李明华 "})
        as_json = client.post("/api/v1/public/verifications",
                              json={"certificate_number": NUMBER, "holder_name": "李明华"})
    assert page.status_code == 200 and as_json.status_code == 200 and as_json.json() == RESULT
    sent = [(rpc, payload) for rpc, payload, _ in client.rpc.calls]
    assert sent == [("certificate.verify_certificate", {"certificate_number": NUMBER, "holder_name": "李明华"})] * 2


@pytest.mark.parametrize("body,field", [
    ({"certificate_number": NUMBER}, "holder_name"),
    ({"certificate_number": "12345", "holder_name": "李明华"}, "certificate_number"),
    ({"token": "x", "holder_name": "李明华"}, None),
    ({"token": "x", "extra": 1}, "extra"),
])
def test_json_verification_refuses_malformed_requests_before_any_call(body, field):
    with gateway() as client:
        answer = client.post("/api/v1/public/verifications", json=body)
    assert answer.status_code == 422 and answer.json()["code"] == "VALIDATION_FAILED"
    if field:
        assert answer.json()["field"] == field
    assert client.rpc.calls == []


def test_form_without_name_is_refused_on_the_page():
    with gateway() as client:
        page = client.post("/verify", data={"certificate_number": NUMBER, "holder_name": ""})
    assert page.status_code == 422 and "请检查填写的内容" in page.text and client.rpc.calls == []


@pytest.mark.parametrize("query,field", [("", "t"), ("?t=a&t=b", "t"), ("?t=a&number=1", "number")])
def test_json_by_token_takes_exactly_one_t(query, field):
    with gateway() as client:
        answer = client.get(f"/api/v1/public/verifications{query}")
    assert (answer.status_code, answer.json()["field"]) == (422, field) and client.rpc.calls == []


def test_bodies_over_the_limits_are_413():
    with gateway() as client:
        as_json = client.post("/api/v1/public/verifications", content=b'{"token": "' + b"a" * 70000 + b'"}',
                              headers={"Content-Type": "application/json"})
        form = client.post("/verify", content=b"holder_name=" + b"a" * 5000,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (as_json.status_code, as_json.json()["code"]) == (413, "REQUEST_TOO_LARGE")
    assert form.status_code == 413 and form.headers["content-type"].startswith("text/html")


# -- the trust anchor -------------------------------------------------------------------------------

def test_trust_anchor_files_are_what_the_certificate_service_publishes(keys):
    material, qr_private, published = keys
    with gateway(StubRpc({"certificate.get_signing_certificates": published})) as client:
        chain = client.get("/.well-known/swms/signing-chain.pem")
        jwk = client.get("/.well-known/swms/qr-token-key.jwk")
        document = client.get("/api/v1/public/signing-certificates")
    assert chain.headers["content-type"] == "application/x-pem-file"
    assert chain.text.count("BEGIN CERTIFICATE") == 2
    assert material.cert_pem.decode().strip() in chain.text and material.chain_pem.decode().strip() in chain.text
    assert jwk.headers["content-type"] == "application/jwk+json"
    key = jwk.json()
    assert (key["kty"], key["crv"], key["alg"]) == ("OKP", "Ed25519", "EdDSA")
    token = tokens.make_token(qr_private, NUMBER)
    number, signature = token.split(".")
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=="))
    public.verify(base64.urlsafe_b64decode(signature + "=="), b"swms-cert-v1:" + number.encode())
    assert document.json() == published
    for answer in (chain, jwk, document):
        assert answer.headers["cache-control"] == "public, max-age=300" and answer.headers["etag"]
    assert [rpc for rpc, _, _ in client.rpc.calls] == ["certificate.get_signing_certificates"]   # cached


def test_trust_anchor_revalidates_with_etag(keys):
    with gateway(StubRpc({"certificate.get_signing_certificates": keys[2]})) as client:
        first = client.get("/.well-known/swms/qr-token-key.jwk")
        same = client.get("/.well-known/swms/qr-token-key.jwk", headers={"If-None-Match": first.headers["etag"]})
        stale = client.get("/.well-known/swms/qr-token-key.jwk", headers={"If-None-Match": '"other"'})
    assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", first.headers["etag"])
    assert same.headers["cache-control"] == "public, max-age=300"
    assert stale.status_code == 200 and stale.content == first.content


def test_trust_anchor_cache_expires_and_outlives_an_outage(keys):
    rpc = StubRpc({"certificate.get_signing_certificates": keys[2]})
    with gateway(rpc) as client:
        cache = client.app.state.trust_anchors
        cache.clock = clock = Clock()
        assert client.get("/.well-known/swms/signing-chain.pem").status_code == 200
        clock.now += 299
        client.get("/.well-known/swms/signing-chain.pem")
        assert cache.calls == 1
        clock.now += 2
        rpc.answers["certificate.get_signing_certificates"] = Problem("UPSTREAM_UNAVAILABLE", "系统繁忙，请稍后重试")
        served = client.get("/.well-known/swms/signing-chain.pem")
        assert cache.calls == 2 and served.status_code == 200 and "BEGIN CERTIFICATE" in served.text


def test_trust_anchor_without_any_copy_is_503():
    rpc = StubRpc({"certificate.get_signing_certificates": Problem("UPSTREAM_UNAVAILABLE", "系统繁忙，请稍后重试")})
    with gateway(rpc) as client:
        answer = client.get("/.well-known/swms/qr-token-key.jwk")
    assert (answer.status_code, answer.json()["code"], answer.headers["retry-after"]) == (503, "UPSTREAM_UNAVAILABLE", "5")


# -- settings and the contract ------------------------------------------------------------------------

@pytest.mark.parametrize("env", [{"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/33"}, {"GATEWAY_TRUSTED_PROXIES": "proxy"},
                                 {"GATEWAY_CORS_ORIGINS": "portal.example.gov.cn"},
                                 {"GATEWAY_CORS_ORIGINS": "https://a.cn/path"}, {"GATEWAY_RATE_TOTAL": "0"},
                                 {"GATEWAY_BURST_PER_ADDRESS": "many"}])
def test_bad_edge_settings_stop_the_gateway(env):
    with pytest.raises(ValueError, match=next(iter(env))):
        Settings.from_env(env)


def test_edge_settings_from_the_environment():
    settings = Settings.from_env({"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1",
                                  "GATEWAY_CORS_ORIGINS": "https://portal.example.gov.cn,http://localhost:3000",
                                  "GATEWAY_RATE_PER_ADDRESS": "2.5", "GATEWAY_HSTS_SECONDS": "0"})
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.1")
    assert settings.cors_origins == ("https://portal.example.gov.cn", "http://localhost:3000")
    assert (settings.rate_per_address, settings.hsts_seconds, settings.burst_total) == (2.5, 0, 1000)
    assert {"GATEWAY_TRUSTED_PROXIES", "GATEWAY_CORS_ORIGINS", "GATEWAY_RATE_TOTAL", "AMQP_URI"} <= set(variables())


def test_openapi_documents_the_public_routes():
    paths = openapi.build()["paths"]
    assert set(paths["/api/v1/public/verifications"]) == {"get", "post"}
    assert "304" in paths["/.well-known/swms/signing-chain.pem"]["get"]["responses"]
    assert paths["/api/v1/public/verifications"]["post"]["security"] == [{}]
    assert json.dumps(paths["/api/v1/public/verifications"]["post"]["requestBody"]).count("VerifyRequest") == 1


def test_dates_on_the_page_are_chinese_calendar_dates():
    from services.gateway.public import _date
    assert _date(dt.date(2029, 2, 28).isoformat()) == "2029年2月28日"


def test_an_unexpected_failure_is_a_logged_500_with_the_request_id(caplog):
    def broken(payload):
        raise RuntimeError("secret detail")

    with gateway(StubRpc({"identity.check_passer": broken})) as client:
        with caplog.at_level("INFO", logger="swms.gateway"):
            answer = client.post("/api/v1/passers/check", json={"name": "李明华", "id_number": "11010519491231002X"},
                                 headers={"X-Request-ID": "req-500-check"})
        metrics = client.get("/metrics").text
    body = answer.json()
    assert (answer.status_code, body["code"], body["request_id"]) == (500, "INTERNAL_ERROR", "req-500-check")
    assert answer.headers["x-request-id"] == "req-500-check" and "secret detail" not in answer.text
    assert answer.headers["x-content-type-options"] == "nosniff"
    access = [r.getMessage() for r in caplog.records if r.name == "swms.gateway.access"]
    assert access == ["POST /api/v1/passers/check 500 " + access[0].split(" 500 ")[1]]
    assert "request_id=req-500-check" in access[0] and "11010519491231002X" not in access[0]
    assert any(r.name == "swms.gateway" and r.exc_info for r in caplog.records)
    assert 'route="/api/v1/passers/check",status="500"' in metrics


def test_headers_over_the_limit_are_431_problem_json():
    with gateway(max_header_bytes=4096) as client:
        refused = client.get("/verify", headers={"X-Padding": "a" * 5000})
        fine = client.get("/verify", headers={"X-Padding": "a" * 3000})
    assert (refused.status_code, refused.json()["code"], refused.json()["status"]) == (431, "REQUEST_TOO_LARGE", 431)
    assert refused.json()["title"] == "Request Header Fields Too Large" and fine.status_code == 200


# -- status lists and the DID document (docs/trust.md) -----------------------------------------------

def status_answer(version: int) -> dict:
    return {"purpose": "revocation", "list_number": 3, "version": version, "updated_at": "2026-12-03T08:00:00Z",
            "credential": f"eyJhbGciOiJFZERTQSJ9.eyJ2IjoxfQ.sig{version}"}


def test_status_lists_are_cached_for_seconds_cacheable_and_never_served_stale():
    rpc = StubRpc({"certificate.get_status_list": status_answer(1)})
    with gateway(rpc, status_list_cache_seconds=2, status_list_max_age_seconds=120) as client:
        cache = client.app.state.status_lists
        cache.clock = clock = Clock()
        first = client.get("/status/v1/revocation/3")
        assert (first.status_code, first.headers["content-type"], first.text) == (200, "application/vc+jwt",
                                                                                  status_answer(1)["credential"])
        assert first.headers["cache-control"] == "public, max-age=120" and first.headers["etag"]
        assert client.get("/status/v1/revocation/3", headers={"If-None-Match": first.headers["etag"]}).status_code == 304
        rpc.answers["certificate.get_status_list"] = status_answer(2)   # a revocation happened
        clock.now += 1.9
        assert client.get("/status/v1/revocation/3").text == status_answer(1)["credential"]
        clock.now += 0.2
        changed = client.get("/status/v1/revocation/3")
        assert changed.text == status_answer(2)["credential"] and changed.headers["etag"] != first.headers["etag"]
        assert cache.calls == 2
        assert rpc.calls[0][:2] == ("certificate.get_status_list", {"purpose": "revocation", "list_number": 3})
        clock.now += 3
        rpc.answers["certificate.get_status_list"] = Problem("UPSTREAM_UNAVAILABLE", "系统繁忙，请稍后重试")
        down = client.get("/status/v1/revocation/3")
        assert down.status_code == 503 and "sig2" not in down.text   # a verifier must hear "could not check"
        assert client.get("/status/v1/expiry/3").status_code == 422
        assert client.get("/status/v1/revocation/0").status_code == 422
        assert client.get("/status/v1/revocation/3?x=1").status_code == 422


def test_the_did_document_lists_the_published_key(keys):
    _, qr_private, published = keys
    with gateway(StubRpc({"certificate.get_signing_certificates": {**published,
                                                                    "issuer_did": "did:web:swms.example.gov.cn"}})) as client:
        answer = client.get("/.well-known/did.json")
        jwk = client.get("/.well-known/swms/qr-token-key.jwk").json()
    document = answer.json()
    assert answer.headers["content-type"] == "application/did+json" and document["id"] == "did:web:swms.example.gov.cn"
    [method] = document["verificationMethod"]
    assert method["id"] == f"did:web:swms.example.gov.cn#{jwk['kid']}" and document["assertionMethod"] == [method["id"]]
    assert method["publicKeyJwk"] == {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]}
    with gateway(StubRpc({"certificate.get_signing_certificates": published})) as client:   # no issuer_did
        assert client.get("/.well-known/did.json").status_code == 404
