"""The gateway's FastAPI application: thin routes generated from the operation table, each one
HTTP request → one RPC over RabbitMQ → one JSON answer, and problem+json for every refusal.

``create_app(settings, rpc=None)`` builds it (tests pass a stand-in RPC client); ``__main__`` runs
it under uvicorn. Per request: the X-Request-ID (the client's, if well formed, else a new one) goes
back on the response and to every service as the correlation id; the Bearer token goes on as
context ``auth_token``; an access log line names route, status and time, never a token, a
password or an ID number (the path is logged as its template).
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles

from services.gateway import edge, inputs, openapi, portal, public
from services.gateway.responses import with_zones
from services.gateway.config import Settings
from services.gateway.operations import OPERATIONS, Operation
from services.gateway.problems import Problem, internal_error, validation
from services.gateway.rpc_client import RpcClient
from swms import error_codes as c
from swms.logs import mask_id_numbers

log = logging.getLogger("swms.gateway")
access_log = logging.getLogger("swms.gateway.access")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{1,4096}$")
PROBLEM_JSON = "application/problem+json"


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("swms_gateway_requests", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.duration = Histogram("swms_gateway_request_seconds", "HTTP request duration", ["route"],
                                  registry=self.registry,
                                  buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.upstream = Histogram("swms_gateway_upstream_seconds", "RPC round trip by method and outcome",
                                  ["rpc", "outcome"], registry=self.registry,
                                  buckets=(.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))

    def observe_upstream(self, rpc: str, outcome: str, seconds: float) -> None:
        self.upstream.labels(rpc, outcome).observe(seconds)


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    headers = problem.headers()
    if problem.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(problem.body(request_id, request.url.path), status_code=problem.status,
                        media_type=PROBLEM_JSON, headers=headers)


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None when there is no such header."""
    values = request.headers.getlist("authorization")
    if not values:
        return None
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if len(values) > 1 or scheme.lower() != "bearer" or not TOKEN.match(token):
        raise Problem(c.TOKEN_INVALID, "登录凭证无效", "Authorization")
    return token


def client_address(request: Request) -> str | None:
    """The end user's address for identity's rate limits (context ``client_ip``)."""
    return request.client.host if request.client else None


def create_app(settings: Settings | None = None, rpc: Any = None) -> FastAPI:
    settings = settings or Settings.from_env()
    metrics = Metrics()
    rpc = rpc if rpc is not None else RpcClient(settings.amqp_uri, settings.rpc_timeout,
                                                observe=metrics.observe_upstream)
    document = openapi.build()
    query_schemas = openapi.query_schemas(document)
    response_schemas = openapi.response_schemas(document)
    components = document["components"]["schemas"]

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await rpc.start()
        try:
            yield
        finally:
            await rpc.close()

    # redirect_slashes off: a trailing slash is an unknown path (404 problem+json), not a bare 307.
    app = FastAPI(title="SWMS HTTP API", openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan,
                  redirect_slashes=False)
    app.state.rpc, app.state.metrics, app.state.settings = rpc, metrics, settings
    app.openapi = lambda: document   # type: ignore[method-assign]

    # -- one route per operation --------------------------------------------------------------

    def endpoint_for(operation: Operation):
        limit = settings.feedback_body_limit if operation.inline_file else settings.json_body_limit

        async def endpoint(request: Request) -> Response:
            token = bearer_token(request)
            if operation.auth and token is None:
                raise Problem(c.AUTH_REQUIRED, "请先登录", "Authorization")
            data: dict[str, Any] = dict(request.path_params)
            raw = await inputs.read_body(request, limit)
            if operation.takes_body:
                body = inputs.parse_json_object(request, raw)
                for field in operation.path_fields:
                    if field in body:
                        raise validation(field, f"{field}应在路径中给出，不应出现在请求体中", "extra_forbidden")
                data.update(body)
            elif raw.strip():
                raise validation("body", "此接口不接受请求体", "extra_forbidden")
            if operation.request is None:
                if request.query_params:
                    raise validation(next(iter(request.query_params.keys())), "此接口不接受参数",
                                     "extra_forbidden")
                payload = None
            elif operation.takes_body:
                inputs.validate(operation.request, data)
                payload = data   # as sent: the service validates again and owns normalisation
            else:
                data.update(inputs.query_object(request, operation, query_schemas[operation.operation_id],
                                                components))
                payload = inputs.validate(operation.request, data).model_dump(mode="json", exclude_unset=True)
            context = {"auth_token": token, "client_ip": client_address(request),
                       "call_id_stack": [request.state.request_id]}
            result = await rpc.call(operation.rpc, payload, context)
            return JSONResponse(with_zones(result, response_schemas[operation.operation_id], components))

        endpoint.__name__ = operation.operation_id
        return endpoint

    for operation in OPERATIONS:
        app.add_api_route(operation.route, endpoint_for(operation), methods=[operation.method],
                          name=operation.operation_id, include_in_schema=False)

    # -- refusals: always problem+json --------------------------------------------------------

    @app.exception_handler(Problem)
    async def on_problem(request: Request, problem: Problem):
        if problem.field == "auth_token":   # the services' name for what HTTP carries in Authorization
            problem.field = "Authorization"
        return problem_response(problem, request)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_exception(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            problem = Problem(c.NOT_FOUND, "请求的接口不存在")
        elif exc.status_code == 405:
            problem = Problem(c.METHOD_NOT_ALLOWED, "此接口不支持该请求方法")
        elif exc.status_code == 413:
            problem = inputs.too_large(settings.json_body_limit)
        elif 400 <= exc.status_code < 500:
            problem = validation("request", "请求格式不正确")
        else:
            problem = internal_error()
        response = problem_response(problem, request)
        if exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response

    @app.exception_handler(RequestValidationError)
    async def on_request_validation(request: Request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or "body"
        return problem_response(validation(field, "请求格式不正确", first.get("type", "invalid")), request)

    # -- the edge (edge.py): rate limits and CORS preflights inside the request id's middleware,
    # the real client address and the response headers around it; public routes (public.py) -----

    edge.install_inner(app, settings, lambda problem, scope: problem_response(problem, Request(scope)))
    public.install(app, settings, rpc)

    # -- request id, access log, metrics, last-resort 500 -------------------------------------

    app.add_middleware(RequestLog, metrics=metrics)

    edge.install_outer(app, settings)

    # -- operations endpoints and the contract ------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    async def readyz():
        if rpc.ready:
            return PlainTextResponse("ready")
        return PlainTextResponse("not ready: AMQP connection or reply consumer down", status_code=503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/openapi.json", include_in_schema=False)
    async def openapi_json():
        return JSONResponse(document)

    assets = swagger_ui_assets()
    if assets is not None:
        app.mount("/api/docs/assets", StaticFiles(directory=assets), name="swagger-ui")

    @app.get("/api/docs", include_in_schema=False)
    async def docs_page():
        return HTMLResponse(DOCS_PAGE if assets is not None else FALLBACK_DOCS_PAGE)

    portal.install(app, settings)   # the web portal's static files at /portal/ (docs/portal.md)
    return app


def _route_template(request: Request) -> str:
    """The matched route's template (never the raw path: it may hold an ID number or token)."""
    route = request.scope.get("route")
    if route is None and request.url.path.startswith("/api/docs/assets/"):
        return "/api/docs/assets"
    return getattr(route, "path", None) or "unmatched"


class RequestLog:
    """Request id, access log, metrics and the last-resort 500, as plain ASGI middleware
    (Starlette's ``BaseHTTPMiddleware`` cost ~1.4 ms of CPU per request in task groups and memory
    streams: most of the gateway's own share; bench/gateway.py)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-request-id"]
        request_id = sent[0] if len(sent) == 1 and REQUEST_ID.match(sent[0]) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        request = Request(scope)
        started = time.perf_counter()
        status = None

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode("ascii"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s [request %s]", scope["method"], _route_template(request),
                          request_id)
            if status is not None:   # the answer has begun: nothing better to send
                raise
            await problem_response(internal_error(), request)(scope, receive, send_with_id)
        elapsed = time.perf_counter() - started
        route = _route_template(request)
        self.metrics.requests.labels(scope["method"], route, str(status)).inc()
        self.metrics.duration.labels(route).observe(elapsed)
        access_log.info("%s %s %d %.1f ms request_id=%s", scope["method"], mask_id_numbers(route), status,
                        elapsed * 1000, request_id)


def swagger_ui_assets() -> Path | None:
    """Swagger UI's files as the PyPI package swagger-ui-bundle ships them (no CDN)."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


DOCS_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>SWMS HTTP API</title>
<link rel="stylesheet" href="/api/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/api/docs/assets/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""

FALLBACK_DOCS_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>SWMS HTTP API</title></head>
<body><h1>SWMS HTTP API</h1><p>The OpenAPI document: <a href="/api/openapi.json">/api/openapi.json</a></p>
</body></html>
"""
