"""End to end at the gateway's edge: the six services as processes, a certificate issued over HTTP
(tools/http_walkthrough.py), and three gateways in front of the same services:

* ``main``: default limits, one CORS origin allowed; the QR codes of this stack lead to its /verify
  (LocalStack sets VERIFY_BASE_URL to it);
* ``proxied``: trusts 127.0.0.1 as a reverse proxy (X-Forwarded-For read), tight rate limits;
* ``direct``: trusts no proxy, the same tight limits, no CORS origin.

What is checked: the page for the fresh certificate at the very URL its PDF's QR code holds, the
JSON twin, 429 + Retry-After after the limit, X-Forwarded-For honoured only from a trusted peer,
the trust anchor (the PEM chain validates the PDF's signature with pyHanko, the JWK checks the QR
token offline), security headers, CORS per configuration, and an access log that holds no token,
password or full ID number.
"""
from __future__ import annotations

import base64
import io
import json
import math
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image
from pypdf import PdfReader

from services.certificate import credentials, render, signing
from tests.e2e.test_gateway import services_on_a_fresh_vhost
from tools.localstack import free_port, wait_until
from tools.walkthrough import (
    COUNTY_OFFICER_PASSWORD,
    HOLDER_ID,
    HOLDER_NAME,
    HOLDER_PASSWORD,
    walk_through_gateway,
)

pytestmark = pytest.mark.e2e

PORTAL = "https://portal.example.gov.cn"
TIGHT = {"GATEWAY_RATE_PER_ADDRESS": "0.01", "GATEWAY_BURST_PER_ADDRESS": "3"}


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    with services_on_a_fresh_vhost(tmp_path_factory.mktemp("edge") / "stack", "swms-edge") as stack:
        stack.status_list_cache_seconds = 2.0   # the default (GATEWAY_STATUS_LIST_CACHE_SECONDS)
        stack.urls = {
            "main": stack.start_gateway({"GATEWAY_CORS_ORIGINS": PORTAL}),
            "proxied": stack.start_gateway({**TIGHT, "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32"},
                                           name="gateway-proxied", port=free_port()),
            "direct": stack.start_gateway(TIGHT, name="gateway-direct", port=free_port()),
        }
        # The demo's own walk (bin/demo): the journey over HTTP, then the QR's URL and its page.
        stack.lines = []
        stack.walked, _, stack.demo_url = walk_through_gateway(stack, stack.urls["main"], tmp_path_factory.mktemp("out"),
                                                               say=stack.lines.append)
        yield stack


@pytest.fixture(scope="module")
def issued(edge):
    """The holder's own view of the new certificate: its number and the QR code's URL."""
    with httpx.Client(base_url=edge.urls["main"], timeout=30) as client:
        token = client.post("/api/v1/sessions", json={"login": HOLDER_ID, "password": HOLDER_PASSWORD}).json()
        view = client.get(f"/api/v1/applications/{edge.walked.application_id}/certificate",
                          headers={"Authorization": f"Bearer {token['access_token']}"})
    assert view.status_code == 200, view.text
    return view.json()


def qr_image_in(pdf: bytes) -> Image.Image:
    """The QR code as the PDF carries it: the page's only image with square sides (the photo is 1-inch)."""
    images = [image.image for image in PdfReader(io.BytesIO(pdf)).pages[0].images]
    squares = [image for image in images if image.width == image.height]
    assert len(squares) == 1, [image.size for image in images]
    return squares[0].convert("L")


def token_of(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["t"][0]


# -- the page at the QR code's URL, and its JSON ------------------------------------------------------

def test_the_pdfs_qr_code_holds_the_gateways_verify_url(edge, issued):
    url = issued["verification_url"]
    assert url.startswith(f"{edge.urls['main']}/verify?t=eyJ")   # the v2 token: a compact JWS
    # The QR code is drawn from the module matrix of its text: the same text draws the same pixels.
    printed = qr_image_in(edge.walked.pdf_path.read_bytes())
    expected = Image.open(io.BytesIO(render._qr_png(url))).convert("L")
    assert printed.size == expected.size and printed.tobytes() == expected.tobytes()


def test_the_demo_prints_the_verify_url_and_what_the_page_says(edge, issued):
    assert edge.demo_url == issued["verification_url"]
    assert edge.lines[-2].endswith(f"the certificate's QR code opens {issued['verification_url']}")
    assert "GET that page (200, no login): 有效 — 持证人 李**，职业水平 社会工作师，有效期 " in edge.lines[-1]
    assert [int(line[1:3]) for line in edge.lines] == list(range(1, len(edge.lines) + 1))


def test_the_page_at_that_url_says_valid_with_the_four_facts_only(edge, issued):
    page = httpx.get(issued["verification_url"], timeout=30)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    section = re.search(r'<section class="result ok" id="result">(.*?)</section>', page.text, re.S).group(1)
    assert re.search(r'<p class="verdict">(.*?)</p>', section).group(1) == "有效"
    facts = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", section))
    assert (facts["持证人"], facts["职业水平"]) == ("李**", "社会工作师")
    assert set(facts) == {"持证人", "职业水平", "有效期", "发证机关"} and "民政" in facts["发证机关"]
    for secret in (HOLDER_ID, HOLDER_ID[-6:], HOLDER_NAME, issued["certificate_number"], issued["person_id"]):
        assert secret not in page.text


def test_the_json_twin_answers_the_same(edge, issued):
    answer = httpx.get(f"{edge.urls['main']}/api/v1/public/verifications",
                       params={"t": token_of(issued["verification_url"])}, timeout=30)
    result = answer.json()
    assert (answer.status_code, result["status"], result["status_label"], result["holder_name_masked"]) == (
        200, "current", "有效", "李**")
    assert result["certificate_number"] == issued["certificate_number"]
    assert answer.headers["cache-control"] == "no-store"


def test_an_altered_token_is_refused_on_the_page_and_in_json(edge, issued):
    token = token_of(issued["verification_url"])
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    page = httpx.get(f"{edge.urls['main']}/verify", params={"t": forged}, timeout=30)
    as_json = httpx.get(f"{edge.urls['main']}/api/v1/public/verifications", params={"t": forged}, timeout=30)
    assert page.status_code == 422 and "核验码无效" in page.text and "有效</p>" not in page.text
    assert (as_json.status_code, as_json.json()["code"]) == (422, "VERIFICATION_TOKEN_FORGED")


def test_by_number_and_name_and_a_wrong_pair_answers_like_an_unknown_number(edge, issued):
    number = issued["certificate_number"]
    unknown = str(int(number) + 500)
    with httpx.Client(base_url=edge.urls["main"], timeout=30) as client:
        right = client.post("/api/v1/public/verifications", json={"certificate_number": number,
                                                                    "holder_name": HOLDER_NAME})
        wrong = client.post("/api/v1/public/verifications", json={"certificate_number": number,
                                                                    "holder_name": "李明"})
        nobody = client.post("/api/v1/public/verifications", json={"certificate_number": unknown,
                                                                     "holder_name": HOLDER_NAME})
        pages = [client.post("/verify", data={"certificate_number": n, "holder_name": name}) for n, name in (
            (number, HOLDER_NAME), (number, "李明"), (unknown, HOLDER_NAME))]
    assert (right.status_code, right.json()["status_label"]) == (200, "有效")

    def without_request_id(answer):
        return {key: value for key, value in answer.json().items() if key != "request_id"}

    assert wrong.status_code == nobody.status_code == 404
    assert without_request_id(wrong) == without_request_id(nobody) and wrong.json()["code"] == "NOT_FOUND"
    assert pages[0].status_code == 200 and '<p class="verdict">有效</p>' in pages[0].text
    assert pages[1].status_code == pages[2].status_code == 404 and pages[1].text == pages[2].text
    assert "未找到该证书" in pages[1].text


# -- rate limits and X-Forwarded-For --------------------------------------------------------------------

def statuses(base_url: str, count: int, forwarded_for: str | None = None) -> list[httpx.Response]:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        return [client.get("/verify", headers=headers) for _ in range(count)]


def test_429_with_retry_after_and_x_forwarded_for_only_from_a_trusted_peer(edge):
    # Behind a trusted proxy: each forwarded address has its own bucket of three.
    answers = statuses(edge.urls["proxied"], 4, "203.0.113.5")
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "RATE_LIMITED" and int(refused.headers["retry-after"]) >= 1
    assert [a.status_code for a in statuses(edge.urls["proxied"], 1, "203.0.113.6")] == [200]
    # Straight from the client: a made-up X-Forwarded-For changes nothing, the peer's bucket counts.
    assert [a.status_code for a in statuses(edge.urls["direct"], 4, "203.0.113.7")] == [200, 200, 200, 429]
    assert [a.status_code for a in statuses(edge.urls["direct"], 1, "203.0.113.8")] == [429]
    assert [a.status_code for a in statuses(edge.urls["direct"], 1)] == [429]


# -- the trust anchor ---------------------------------------------------------------------------------

def test_the_published_chain_validates_the_pdf_signature(edge):
    answer = httpx.get(f"{edge.urls['main']}/.well-known/swms/signing-chain.pem", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-pem-file"
    pdf = edge.walked.pdf_path.read_bytes()
    report = signing.validate_pdf(pdf, answer.content)   # pyHanko's validator, no fetching
    assert report.ok and (report.intact, report.valid, report.trusted, report.covers_whole_file) == (True,) * 4
    tampered = bytearray(pdf)
    tampered[len(pdf) // 3] ^= 0x01
    assert not signing.validate_pdf(bytes(tampered), answer.content).ok


def test_the_published_jwk_checks_the_qr_token_offline(edge, issued):
    key = httpx.get(f"{edge.urls['main']}/.well-known/swms/qr-token-key.jwk", timeout=30).json()
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=="))
    header, payload, signature = token_of(issued["verification_url"]).split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    public.verify(raw, f"{header}.{payload}".encode())     # a plain JWS check: any JOSE library does it
    claims = credentials.read_qr_token(public, token_of(issued["verification_url"]))
    assert (claims["certificate_number"], claims["holder_name_masked"], claims["level"]) == (
        issued["certificate_number"], "李**", "社会工作师")
    assert (claims["valid_from"].isoformat(), claims["valid_until"].isoformat()) == (issued["valid_from"],
                                                                                     issued["valid_until"])
    with pytest.raises(InvalidSignature):
        public.verify(raw, f"{header}.{payload[:-2]}AA".encode())


def test_the_trust_anchor_is_cacheable(edge):
    url = f"{edge.urls['main']}/.well-known/swms/signing-chain.pem"
    first = httpx.get(url, timeout=30)
    again = httpx.get(url, headers={"If-None-Match": first.headers["etag"]}, timeout=30)
    assert first.headers["cache-control"] == "public, max-age=300"
    assert (again.status_code, again.headers["etag"]) == (304, first.headers["etag"])


# -- headers, CORS, the access log ------------------------------------------------------------------------

def test_security_headers_on_the_page_and_the_api(edge, issued):
    page = httpx.get(issued["verification_url"], timeout=30)
    api = httpx.post(f"{edge.urls['main']}/api/v1/sessions", json={"login": HOLDER_ID, "password": "x" * 12},
                     timeout=30)
    for answer in (page, api):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["strict-transport-security"].startswith("max-age=")
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert "style-src 'sha256-" in page.headers["content-security-policy"]
    assert api.status_code == 401 and api.headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("gateway,origin,allowed", [("main", PORTAL, True), ("main", "https://evil.example.com", False),
                                                    ("direct", PORTAL, False)])
def test_cors_per_configuration(edge, gateway, origin, allowed):
    url = f"{edge.urls[gateway]}/api/v1/public/verifications"
    preflight = httpx.options(url, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "content-type"}, timeout=30)
    assert preflight.status_code == (204 if allowed else 403)
    assert preflight.headers.get("access-control-allow-origin") == (origin if allowed else None)


def test_the_access_log_holds_no_token_password_or_id_number(edge, issued):
    password, qr_token = "Wrong-password-" + uuid.uuid4().hex[:8], token_of(issued["verification_url"])
    with httpx.Client(base_url=edge.urls["main"], timeout=30) as client:
        sent = [
            client.post("/api/v1/sessions", json={"login": HOLDER_ID, "password": password}),
            client.get("/verify", params={"t": qr_token}),
            client.get("/api/v1/public/verifications", params={"t": qr_token}),
            client.get(f"/api/v1/persons/{HOLDER_ID}", headers={"Authorization": "Bearer abc.def.ghi"}),
            client.get(f"/api/v1/no-such-route/{HOLDER_ID}", params={"id": HOLDER_ID, "t": qr_token}),
        ]
    log = (edge.log_dir / "gateway.log").read_text(encoding="utf-8", errors="replace")
    for request in sent:
        assert request.headers["x-request-id"] in log   # each request has its access line
    for secret in (password, qr_token, qr_token.split(".")[1], HOLDER_ID, "abc.def.ghi", HOLDER_PASSWORD):
        assert secret not in log, secret
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(entry["logger"] == "swms.gateway.access" and "/verify 200" in entry["message"] for entry in lines)


# -- status lists and the credential beside the PDF (docs/trust.md); last: it revokes the certificate --

VERIFIER = Path(__file__).resolve().parents[2] / "examples" / "verify_credential.py"


def run_verifier(path: Path) -> tuple[int, str]:
    done = subprocess.run([sys.executable, str(VERIFIER), str(path), "--allow-http"], capture_output=True, text=True,
                          timeout=60)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def credential_file(edge, issued, tmp_path_factory) -> Path:
    answer = httpx.get(issued["credential_download_url"], timeout=30)   # the holder's short-lived link
    assert answer.status_code == 200 and answer.text.count(".") == 2
    path = tmp_path_factory.mktemp("vc") / f"{issued['certificate_number']}.vc.jwt"
    path.write_text(answer.text)
    return path


def test_the_credential_checks_with_only_the_public_urls(edge, issued, credential_file):
    code, out = run_verifier(credential_file)
    print(out)
    did = "did:web:" + urllib.parse.urlsplit(edge.urls["main"]).netloc.replace(":", "%3A")
    assert code == 0, out
    assert "完整性 integrity: 通过 valid" in out and "状态 status: 有效 valid" in out
    assert f"签发者 issuer identity: 通过 valid — {did}" in out and "VC verification time:" in out
    document = httpx.get(f"{edge.urls['main']}/.well-known/did.json", timeout=30)
    assert document.json()["id"] == did and document.headers["content-type"] == "application/did+json"
    key = httpx.get(f"{edge.urls['main']}/.well-known/swms/qr-token-key.jwk", timeout=30).json()
    assert document.json()["verificationMethod"][0]["publicKeyJwk"]["x"] == key["x"]
    payload = json.loads(credentials.unb64url(credential_file.read_text().split(".")[1]))
    assert HOLDER_ID not in json.dumps(payload) and payload["credentialSubject"]["name"] == HOLDER_NAME
    assert (payload["validFrom"][:10], payload["validUntil"][:10]) == (issued["valid_from"], issued["valid_until"])
    listed = httpx.get(payload["credentialStatus"][0]["statusListCredential"], timeout=30)
    assert listed.status_code == 200 and listed.headers["content-type"] == "application/vc+jwt"
    assert listed.headers["cache-control"] == "public, max-age=120"
    again = httpx.get(listed.url, headers={"If-None-Match": listed.headers["etag"]}, timeout=30)
    assert again.status_code == 304
    assert httpx.get(f"{edge.urls['main']}/status/v1/revocation/999", timeout=30).status_code == 404
    assert httpx.get(f"{edge.urls['main']}/status/v1/expiry/1", timeout=30).status_code == 422


def test_lifecycle_changes_reach_the_public_list_within_seconds(edge, issued, credential_file):
    payload = json.loads(credentials.unb64url(credential_file.read_text().split(".")[1]))
    lists = {entry["statusPurpose"]: entry["statusListCredential"] for entry in payload["credentialStatus"]}
    index = int(payload["credentialStatus"][0]["statusListIndex"])
    number = issued["certificate_number"]

    def published_bit(purpose: str) -> bool:
        answer = httpx.get(lists[purpose], timeout=30)
        assert answer.status_code == 200, answer.text
        jws = answer.text
        status_list = json.loads(credentials.unb64url(jws.split(".")[1]))
        return credentials.bit(credentials.decode_list(status_list["credentialSubject"]["encodedList"]), index)

    with httpx.Client(base_url=edge.urls["main"], timeout=30) as client:
        login = client.post("/api/v1/sessions", json={"login": "county@example.gov.cn",
                                                      "password": COUNTY_OFFICER_PASSWORD})
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        latencies, verdicts = [], []

        def change(action: str, purpose: str, wanted: bool) -> None:
            started = time.perf_counter()
            answer = client.post(f"/api/v1/certificates/{number}/{action}", json={"reason": "核查"}, headers=headers)
            assert answer.status_code == 200, answer.text
            # Polled under the gateway's 10 requests/s per address (a faster poll is refused with 429).
            wait_until(lambda: published_bit(purpose) == wanted, timeout=15, interval=0.15,
                       what=f"the {purpose} list to show {action}")
            latencies.append(time.perf_counter() - started)

        for cycle in range(3):
            change("suspension", "suspension", True)
            if cycle == 0:
                verdicts.append(run_verifier(credential_file))
            change("reinstatement", "suspension", False)
        change("revocation", "revocation", True)
        verdicts.append(run_verifier(credential_file))
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]
    print(f"status-list update latency (officer's POST to the public list showing it, gateway cache "
          f"{edge.status_list_cache_seconds} s, {len(latencies)} changes incl. 1 revocation): "
          f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (shared machine: noisy)")
    (suspended_code, suspended_out), (revoked_code, revoked_out) = verdicts
    assert suspended_code == 1 and "状态 status: 已暂停 suspended" in suspended_out
    assert revoked_code == 1 and "状态 status: 已撤销 revoked" in revoked_out
    assert "完整性 integrity: 通过 valid" in revoked_out     # the PDF/VC stays intact: the list says currency
