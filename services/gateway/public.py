"""What the gateway serves to anyone, without a login (docs/http-api.md, "Public"):

* ``GET /verify?t=<token>``: the page a certificate's QR code opens (the QR holds
  ``VERIFY_BASE_URL?t=<number>.<signature>``, VERIFY_BASE_URL being this page's public address).
  One server-rendered page in Chinese for a phone, no script, no external file, a strict CSP. It
  says plainly 有效 / 已暂停 / 已撤销（原因）/ 已过期 / 已换发, with the masked name, level, validity
  and issuing authority, and nothing more. A form on it (``POST /verify``) verifies by certificate
  number + the holder's full name; an unknown number and a wrong pair get the same page.
* the same as JSON: ``GET /api/v1/public/verifications?t=<token>`` and
  ``POST /api/v1/public/verifications`` ``{certificate_number, holder_name}`` (or ``{token}``).
* the status lists (docs/trust.md): ``GET /status/v1/<revocation|suspension>/<list number>``, each a
  signed ``BitstringStatusListCredential`` (``application/vc+jwt``) from ``certificate.get_status_list``,
  kept ``GATEWAY_STATUS_LIST_CACHE_SECONDS`` (a change shows within seconds) and served with ETag and
  ``Cache-Control: public, max-age=GATEWAY_STATUS_LIST_MAX_AGE_SECONDS``. No stale copy is served
  when the service does not answer: a verifier must learn that it could not check.
* the issuer's DID document ``/.well-known/did.json`` (did:web of this host, the QR-token key).
* the trust anchor, for checking offline: ``/.well-known/swms/signing-chain.pem`` (the certificate
  chain of the PDF signatures), ``/.well-known/swms/qr-token-key.jwk`` (the QR tokens' Ed25519 key)
  and ``/api/v1/public/signing-certificates`` (both, as the RPC gives them). Cacheable
  (``Cache-Control: public, max-age``, ``ETag``, 304); the gateway keeps the RPC's answer for
  ``GATEWAY_TRUST_ANCHOR_CACHE_SECONDS`` and serves the last one it had while the certificate
  service does not answer.

Every call passes the client's address as context ``client_ip``: the certificate service limits
verifications per address (``RATE_LIMITED`` → 429 with Retry-After, here as on every route).
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import html
import json
import logging
import math
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from services.gateway import inputs
from services.gateway.problems import Problem, validation
from swms import error_codes as c
from swms.contracts.certificate import (
    SigningCertificates,
    StatusListCredential,
    StatusListRequest,
    VerificationResult,
    VerifyRequest,
)

log = logging.getLogger("swms.gateway.public")

VERIFY_RPC = "certificate.verify_certificate"
SIGNING_RPC = "certificate.get_signing_certificates"
STATUS_LIST_RPC = "certificate.get_status_list"
STATUS_LIST_PATH = "/status/v1/{purpose}/{list_number}"
DID_PATH = "/.well-known/did.json"
CHAIN_PATH = "/.well-known/swms/signing-chain.pem"
JWK_PATH = "/.well-known/swms/qr-token-key.jwk"
VERIFICATIONS_PATH = "/api/v1/public/verifications"
SIGNING_PATH = "/api/v1/public/signing-certificates"
FORM_BODY_LIMIT = 4096   # two short fields


def call_context(request: Request) -> dict[str, Any]:
    client = request.client
    return {"client_ip": client.host if client else None, "call_id_stack": [request.state.request_id]}


# -- the trust anchor -------------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ed25519_jwk(public_key_pem: str) -> dict[str, str]:
    """RFC 8037 OKP key with its RFC 7638 thumbprint as ``kid``."""
    key = serialization.load_pem_public_key(public_key_pem.encode("ascii"))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the QR-token key is not Ed25519")
    x = _b64url(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    thumbprint = hashlib.sha256(json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"),
                                           sort_keys=True).encode()).digest()
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": _b64url(thumbprint), "use": "sig", "alg": "EdDSA"}


def did_document(did: str, public_key_pem: str) -> dict[str, Any]:
    """did:web document: the QR-token key as the issuer's assertion method (publicKeyJwk)."""
    jwk = ed25519_jwk(public_key_pem)
    method = f"{did}#{jwk['kid']}"
    return {"@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/jwk/v1"], "id": did,
            "verificationMethod": [{"id": method, "type": "JsonWebKey", "controller": did,
                                    "publicKeyJwk": {key: jwk[key] for key in ("kty", "crv", "x")}}],
            "assertionMethod": [method], "authentication": [method]}


@dataclass(frozen=True)
class TrustAnchor:
    chain_pem: bytes       # the signing certificate, then its chain up to the root
    jwk: bytes
    document: bytes        # the RPC's answer as JSON
    did_document: bytes | None = None

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> "TrustAnchor":
        published = SigningCertificates.model_validate(result)
        parts = [published.signing_certificate_pem.strip(), published.chain_pem.strip()]
        chain = "\n".join(dict.fromkeys(part for part in parts if part)) + "\n"
        jwk = json.dumps(ed25519_jwk(published.qr_token_public_key_pem), indent=2) + "\n"
        document = json.dumps(result, ensure_ascii=False).encode("utf-8")   # as published
        did = None
        if published.issuer_did:
            did = (json.dumps(did_document(published.issuer_did, published.qr_token_public_key_pem), indent=2)
                   + "\n").encode("ascii")
        return cls(chain.encode("ascii"), jwk.encode("ascii"), document, did)


class TrustAnchorCache:
    """``certificate.get_signing_certificates``, asked at most once per ``seconds`` (one call in
    flight however many requests wait); the last answer is served while the service is away."""

    def __init__(self, rpc, seconds: float, clock=time.monotonic):
        self.rpc, self.seconds, self.clock = rpc, seconds, clock
        self.calls = 0
        self._anchor: TrustAnchor | None = None
        self._fetched = -math.inf
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._anchor is not None and self.clock() - self._fetched < self.seconds

    async def get(self, context: dict[str, Any]) -> TrustAnchor:
        if self._fresh():
            return self._anchor
        async with self._lock:
            if self._fresh():
                return self._anchor
            self.calls += 1
            try:
                self._anchor = TrustAnchor.from_result(await self.rpc.call(SIGNING_RPC, None, context))
            except Problem as problem:
                if self._anchor is None or problem.status < 500:
                    raise
                log.warning("%s failed (%s); serving the copy from %.0f s ago", SIGNING_RPC, problem.code,
                            self.clock() - self._fetched)
                return self._anchor
            self._fetched = self.clock()
        return self._anchor


class StatusListCache:
    """``certificate.get_status_list`` per list, asked at most once per ``seconds`` (one call in
    flight per list). Nothing stale is served when the service fails: the error goes out."""

    def __init__(self, rpc, seconds: float, clock=time.monotonic):
        self.rpc, self.seconds, self.clock = rpc, seconds, clock
        self.calls = 0
        self._copies: dict[tuple[str, int], tuple[float, bytes]] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}

    def _fresh(self, key) -> bytes | None:
        found = self._copies.get(key)
        return found[1] if found is not None and self.clock() - found[0] < self.seconds else None

    async def get(self, purpose: str, list_number: int, context: dict[str, Any]) -> bytes:
        key = (purpose, list_number)
        body = self._fresh(key)
        if body is not None:
            return body
        async with self._locks.setdefault(key, asyncio.Lock()):
            body = self._fresh(key)
            if body is not None:
                return body
            self.calls += 1
            result = await self.rpc.call(STATUS_LIST_RPC, {"purpose": purpose, "list_number": list_number}, context)
            body = StatusListCredential.model_validate(result).credential.encode("ascii")
            self._copies[key] = (self.clock(), body)
        return body


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [item.strip().removeprefix("W/") for item in header.split(",")]
    return "*" in candidates or etag in candidates


def cacheable(request: Request, body: bytes, media_type: str, max_age: int) -> Response:
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


# -- the page -----------------------------------------------------------------------------------

STYLE = """
body{margin:0;font:16px/1.6 -apple-system,"PingFang SC","Noto Sans CJK SC","Microsoft YaHei",sans-serif;
color:#1f2328;background:#f4f5f7}
main{max-width:34rem;margin:0 auto;padding:1rem}
h1{font-size:1.25rem;margin:.5rem 0 1rem}
section,form{background:#fff;border-radius:.5rem;padding:1rem;margin-bottom:1rem;box-shadow:0 1px 2px #0002}
.verdict{font-size:2rem;font-weight:700;margin:0 0 .25rem}
.ok .verdict{color:#137333}.warn .verdict{color:#b06000}.bad .verdict{color:#b3261e}
dl{display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem;margin:.75rem 0 0}
dt{color:#5f6368}dd{margin:0}
label{display:block;margin:.5rem 0 .25rem}
input{box-sizing:border-box;width:100%;font-size:1rem;padding:.6rem;border:1px solid #bbb;border-radius:.35rem}
button{margin-top:1rem;width:100%;font-size:1rem;padding:.7rem;border:0;border-radius:.35rem;background:#1a5fb4;color:#fff}
footer{font-size:.85rem;color:#5f6368}footer a{color:#1a5fb4}
""".strip()
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode("ascii")
PAGE_CSP = (f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")

EXPLANATION = {
    "current": ("ok", "该证书由登记机关签发，真实有效。"),
    "suspended": ("warn", "该证书已被登记机关暂停，暂停期间不能作为有效证书使用。"),
    "revoked": ("bad", "该证书已被登记机关撤销，不再有效。"),
    "expired": ("warn", "该证书已超过有效期。"),
    "superseded": ("warn", "该证书已换发新证书，请以新证书为准。"),
}
REFUSAL_TITLE = {
    c.NOT_FOUND: "未找到该证书",
    c.VERIFICATION_TOKEN_FORGED: "核验码无效",
    c.RATE_LIMITED: "查询过于频繁",
    c.VALIDATION_FAILED: "请检查填写的内容",
}


def _date(value: str) -> str:
    day = dt.date.fromisoformat(value)
    return f"{day.year}年{day.month}月{day.day}日"


def result_section(result: dict[str, Any]) -> str:
    tone, explanation = EXPLANATION.get(result["status"], ("warn", ""))
    verdict = result["status_label"]
    if result.get("reason") and result["status"] in ("revoked", "suspended"):
        verdict += f"（{result['reason']}）"
    rows = (("持证人", result["holder_name_masked"]), ("职业水平", result["level"]),
            ("有效期", f"{_date(result['valid_from'])}至{_date(result['valid_until'])}"),
            ("发证机关", result["authority"]))
    items = "".join(f"<dt>{name}</dt><dd>{html.escape(str(value))}</dd>" for name, value in rows)
    return (f'<section class="result {tone}" id="result"><p class="verdict">{html.escape(verdict)}</p>'
            f"<p>{explanation}</p><dl>{items}</dl></section>")


def refusal_section(problem: Problem) -> str:
    title = REFUSAL_TITLE.get(problem.code, "暂时无法核验")
    text = problem.message
    if problem.code == c.RATE_LIMITED and problem.retry_after:
        text = f"请在 {problem.retry_after} 秒后再试。"
    return (f'<section class="result bad" id="result"><p class="verdict">{html.escape(title)}</p>'
            f"<p>{html.escape(text)}</p></section>")


FORM = """<form method="post" action="/verify">
<p><strong>按证书编号核验</strong>：请填写证书上的证书编号和持证人的完整姓名。</p>
<label for="certificate_number">证书编号（13 位数字）</label>
<input id="certificate_number" name="certificate_number" inputmode="numeric" autocomplete="off" maxlength="20" required>
<label for="holder_name">持证人姓名</label>
<input id="holder_name" name="holder_name" autocomplete="off" maxlength="50" required>
<button type="submit">核验</button>
</form>"""


def page(section: str = "") -> str:
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>社会工作者电子登记证书核验</title>
<style>{STYLE}</style></head>
<body><main>
<h1>社会工作者电子登记证书核验</h1>
{section}
{FORM}
<footer><p>离线核验：证书 PDF 的电子签名可用<a href="{CHAIN_PATH}">签名证书链（PEM）</a>在任一 PDF 阅读器中验证；
二维码核验码可用<a href="{JWK_PATH}">二维码公钥（JWK）</a>离线验证。全国社会工作信息系统</p></footer>
</main></body></html>
"""


def html_page(section: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(page(section), status_code=status,
                        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store", **(headers or {})})


# -- the routes ---------------------------------------------------------------------------------

def install(app, settings, rpc) -> None:
    anchors = TrustAnchorCache(rpc, settings.trust_anchor_seconds)
    app.state.trust_anchors = anchors
    status_lists = StatusListCache(rpc, settings.status_list_cache_seconds)
    app.state.status_lists = status_lists

    async def verify(request: Request, data: dict[str, Any]) -> dict[str, Any]:
        inputs.validate(VerifyRequest, data)
        return await rpc.call(VERIFY_RPC, data, call_context(request))

    async def show(request: Request, data: dict[str, Any]) -> HTMLResponse:
        try:
            return html_page(result_section(await verify(request, data)))
        except Problem as problem:
            return html_page(refusal_section(problem), problem.status, problem.headers())

    def only_t(request: Request) -> str | None:
        for key in request.query_params.keys():
            if key != "t":
                raise validation(key, f"{key}是不允许的字段", "extra_forbidden")
        values = request.query_params.getlist("t")
        if len(values) > 1:
            raise validation("t", "查询参数 t 重复", "duplicate")
        return values[0] if values else None

    @app.get("/verify", include_in_schema=False)
    async def verify_page(request: Request):
        token = request.query_params.get("t")   # other parameters a scanner app may add are ignored
        return html_page("") if token is None else await show(request, {"token": token})

    @app.post("/verify", include_in_schema=False)
    async def verify_form(request: Request):
        try:
            raw = await inputs.read_body(request, FORM_BODY_LIMIT)
            media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
            if media != "application/x-www-form-urlencoded":
                raise validation("Content-Type", "请通过页面上的表单提交")
            fields = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), max_num_fields=4)
        except (Problem, ValueError) as refusal:
            problem = refusal if isinstance(refusal, Problem) else validation("body", "表单内容不正确")
            return html_page(refusal_section(problem), problem.status)
        number = re.sub(r"\s+", "", (fields.get("certificate_number") or [""])[0])
        name = (fields.get("holder_name") or [""])[0].strip()
        return await show(request, {"certificate_number": number or None, "holder_name": name or None})

    @app.get(VERIFICATIONS_PATH, include_in_schema=False)
    async def verification_by_token(request: Request):
        token = only_t(request)
        if token is None:
            raise validation("t", "请提供二维码核验码 t", "missing")
        return JSONResponse(await verify(request, {"token": token}))

    @app.post(VERIFICATIONS_PATH, include_in_schema=False)
    async def verification_by_body(request: Request):
        if request.query_params:
            raise validation(next(iter(request.query_params.keys())), "此接口不接受查询参数", "extra_forbidden")
        body = inputs.parse_json_object(request, await inputs.read_body(request, settings.json_body_limit))
        return JSONResponse(await verify(request, body))

    @app.get(SIGNING_PATH, include_in_schema=False)
    async def signing_certificates(request: Request):
        anchor = await anchors.get(call_context(request))
        return cacheable(request, anchor.document, "application/json", settings.trust_anchor_seconds)

    @app.get(CHAIN_PATH, include_in_schema=False)
    async def signing_chain(request: Request):
        anchor = await anchors.get(call_context(request))
        return cacheable(request, anchor.chain_pem, "application/x-pem-file", settings.trust_anchor_seconds)

    @app.get(JWK_PATH, include_in_schema=False)
    async def qr_token_key(request: Request):
        anchor = await anchors.get(call_context(request))
        return cacheable(request, anchor.jwk, "application/jwk+json", settings.trust_anchor_seconds)

    @app.get(DID_PATH, include_in_schema=False)
    async def issuer_did_document(request: Request):
        anchor = await anchors.get(call_context(request))
        if anchor.did_document is None:
            raise Problem(c.NOT_FOUND, "未发布 DID 文档", "path")
        return cacheable(request, anchor.did_document, "application/did+json", settings.trust_anchor_seconds)

    @app.get(STATUS_LIST_PATH, include_in_schema=False)
    async def status_list(request: Request, purpose: str, list_number: str):
        if request.query_params:
            raise validation(next(iter(request.query_params.keys())), "此接口不接受查询参数", "extra_forbidden")
        if not re.fullmatch(r"[1-9]\d{0,6}", list_number):
            raise validation("list_number", "状态列表编号应为正整数")
        wanted = inputs.validate(StatusListRequest, {"purpose": purpose, "list_number": int(list_number)})
        body = await status_lists.get(wanted.purpose.value, wanted.list_number, call_context(request))
        return cacheable(request, body, "application/vc+jwt", settings.status_list_max_age_seconds)


# -- OpenAPI ------------------------------------------------------------------------------------

OPENAPI_MODELS = [(VerifyRequest, "validation"), (VerificationResult, "serialization"),
                  (SigningCertificates, "serialization")]


def openapi_entries(refs: dict, responses) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, method, operation) for the public JSON routes and the trust anchor. ``refs`` maps
    (model, mode) to its ``$ref``; ``responses(operation, schema)`` is openapi.py's table of them."""
    from services.gateway.operations import Operation

    def entry(operation_id: str, summary: str, description: str, parameters: list, answers: dict,
              body: dict | None = None) -> dict[str, Any]:
        found = {"operationId": operation_id, "summary": summary, "tags": ["public"], "description": description,
                 "security": [{}], "parameters": [{"$ref": "#/components/parameters/X-Request-ID"}, *parameters],
                 "responses": answers}
        if body is not None:
            found["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        return found

    result = refs[(VerificationResult, "serialization")]
    by_token = Operation("GET", "/public/verifications", VERIFY_RPC, None, VerificationResult, "")
    by_body = Operation("POST", "/public/verifications", VERIFY_RPC, VerifyRequest, VerificationResult, "")
    anchor = Operation("GET", "/public/signing-certificates", SIGNING_RPC, None, SigningCertificates, "")
    token_parameter = {"name": "t", "in": "query", "required": True,
                       "description": "the QR code's token (v2 compact JWS, or v1 `<number>.<signature>`), as in the verification URL",
                       "schema": {"type": "string", "minLength": 1, "maxLength": 600}}
    revalidate = {"name": "If-None-Match", "in": "header", "required": False,
                  "description": "the ETag of the copy you hold: 304 if it is still current",
                  "schema": {"type": "string"}}
    cache_headers = {"ETag": {"description": "the content's tag", "schema": {"type": "string"}},
                     "Cache-Control": {"description": "public, max-age=<seconds>", "schema": {"type": "string"}}}

    def cached(schema: dict, media_type: str) -> dict:
        answers = responses(anchor, schema)
        answers["200"]["headers"] = {**answers["200"]["headers"], **cache_headers}
        answers["200"]["content"] = {media_type: {"schema": schema}}
        answers["304"] = {"description": "Not Modified: the copy you hold is current", "headers": cache_headers}
        return answers

    text = {"type": "string"}
    return [
        (VERIFICATIONS_PATH, "get", entry(
            "public_verify_by_token", "证书核验：二维码核验码",
            f"RPC `{VERIFY_RPC}` with `{{token}}`: what the QR code's page `/verify?t=` shows, as JSON. "
            "Rate-limited per client address (429, Retry-After).",
            [token_parameter], responses(by_token, result))),
        (VERIFICATIONS_PATH, "post", entry(
            "public_verify", "证书核验：证书编号 + 持证人姓名（或核验码）",
            f"RPC `{VERIFY_RPC}`. A number needs the holder's full name; an unknown number and a number "
            "with a name that is not its holder's answer the same 404. Rate-limited per client address.",
            [], responses(by_body, result), refs[(VerifyRequest, "validation")])),
        (SIGNING_PATH, "get", entry(
            "public_signing_certificates", "信任锚：PDF 签名证书链与二维码公钥",
            f"RPC `{SIGNING_RPC}`, cached by the gateway. Cacheable (ETag, max-age).",
            [revalidate], cached(refs[(SigningCertificates, "serialization")], "application/json"))),
        (CHAIN_PATH, "get", entry(
            "well_known_signing_chain", "PDF 签名证书链（PEM）",
            "The signing certificate, then its chain to the root: trust the root in a PDF reader (or "
            "pyHanko) to check a certificate PDF's signature.",
            [revalidate], cached(text, "application/x-pem-file"))),
        (JWK_PATH, "get", entry(
            "well_known_qr_token_key", "二维码核验码公钥（JWK, Ed25519）",
            "Checks a QR token offline: v1, Ed25519 signature over `swms-cert-v1:<number>`; v2, a compact "
            "JWS (`typ: swms-qr+jwt`). The same key signs the credentials and status lists.",
            [revalidate], cached({"type": "object"}, "application/jwk+json"))),
        (DID_PATH, "get", entry(
            "well_known_did_document", "签发者 DID 文档（did:web）",
            "The issuer of the certificate credentials and status lists: `did:web:<this host>`, its key "
            "(publicKeyJwk, Ed25519, the QR-token key) as assertion method. Cacheable (ETag, max-age).",
            [revalidate], cached({"type": "object"}, "application/did+json"))),
        (STATUS_LIST_PATH, "get", entry(
            "public_status_list", "证书状态列表（W3C Bitstring Status List）",
            f"RPC `{STATUS_LIST_RPC}`: a signed BitstringStatusListCredential (VC-JOSE compact JWS, "
            "`application/vc+jwt`); 131072 entries, GZIP + base64url. Kept by the gateway for "
            "GATEWAY_STATUS_LIST_CACHE_SECONDS, Cache-Control max-age GATEWAY_STATUS_LIST_MAX_AGE_SECONDS. "
            "A list that cannot be had answers 503: never a stale copy (docs/trust.md).",
            [{"name": "purpose", "in": "path", "required": True,
              "schema": {"type": "string", "enum": ["revocation", "suspension"]}},
             {"name": "list_number", "in": "path", "required": True,
              "schema": {"type": "integer", "minimum": 1, "maximum": 1000000}}, revalidate],
            cached(text, "application/vc+jwt"))),
    ]
