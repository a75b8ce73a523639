"""The gateway's edge, as plain ASGI middleware (cheaper per request than Starlette's
``BaseHTTPMiddleware``): who the client is, whether it may come in, and the headers every answer
carries. Settings: docs/configuration.md ("gateway"); behaviour: docs/http-api.md.

Outermost first:

1. ``ResponseHeaders``: security headers on every response (HSTS, nosniff, Referrer-Policy,
   X-Frame-Options, a ``default-src 'none'`` CSP on anything but HTML, which sets its own),
   ``Cache-Control: no-store`` on every /api/v1 answer that did not choose its caching itself, and
   the CORS headers for an allowed ``Origin``.
2. ``RealClient``: ``scope["client"]`` becomes the end user's address. ``X-Forwarded-For`` is read
   only when the TCP peer is a trusted proxy (``GATEWAY_TRUSTED_PROXIES``), from the right: the
   first address that is not a trusted proxy is the client (anything left of it was written by
   the client and proves nothing). Everything after (rate limits, the ``client_ip`` the services
   get, identity's and certificate's own limits) sees that address.
3. the core's request id / access log / metrics middleware (app.py), then
4. ``Admission``: heads over ``GATEWAY_MAX_HEADER_BYTES`` refused (431); CORS preflights answered
   here; then a token bucket per client address and one for
   all clients together. Over either: 429 problem+json with ``Retry-After``. The buckets live in
   this process: each replica limits on its own (N replicas let N times the total through); the
   certificate service's verification limits, counted in its database, are the global ones.
"""
from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from services.gateway.config import Settings
from services.gateway.problems import Problem
from swms import error_codes as c

UNMETERED = ("/healthz", "/readyz", "/metrics")   # probes and scrapes: never refused
RATE_LIMITED_MESSAGE = "请求过于频繁，请稍后重试"
API_PREFIX = "/api/v1/"
JSON_CSP = b"default-src 'none'; frame-ancestors 'none'"
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
CORS_HEADERS = "Authorization, Content-Type, X-Request-ID"
CORS_EXPOSED = "X-Request-ID, Retry-After"


# -- who the client is ------------------------------------------------------------------------

def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from one X-Forwarded-For entry (``1.2.3.4``, ``1.2.3.4:5``, ``[::1]:5``, ``::1``)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class TrustedProxies:
    def __init__(self, cidrs: tuple[str, ...]):
        self.networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]

    def __contains__(self, address) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: list[str]) -> str | None:
        """The end user's address, given the TCP peer and the X-Forwarded-For header(s)."""
        if not self.networks or not forwarded_for or _address(peer or "") not in self:
            return peer
        entries = [entry for header in forwarded_for for entry in header.split(",")]
        for entry in reversed(entries):
            address = _address(entry)
            if address is None:
                return peer   # a proxy we trust wrote garbage: believe only the peer
            if address not in self:
                return str(address)
        return peer   # every hop a trusted proxy: the request came from inside


class RealClient:
    def __init__(self, app, trusted_proxies: tuple[str, ...]):
        self.app = app
        self.proxies = TrustedProxies(trusted_proxies)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.proxies.networks:
            peer = scope.get("client")
            forwarded = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"]
            host = self.proxies.client(peer[0] if peer else None, forwarded)
            if peer is not None and host != peer[0]:
                scope = {**scope, "client": (host, 0)}
        await self.app(scope, receive, send)


# -- whether it may come in -------------------------------------------------------------------

class TokenBucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, now: float):
        self.tokens, self.updated = tokens, now


class RateLimiter:
    """Token buckets: one per client address (at most ``max_addresses``, least recently seen
    dropped first: a dropped bucket was full or nearly so) and one for everyone."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic,
                 max_addresses: int = 100_000):
        self.rate, self.burst = settings.rate_per_address, settings.burst_per_address
        self.total_rate, self.total_burst = settings.rate_total, settings.burst_total
        self.clock, self.max_addresses = clock, max_addresses
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.total: TokenBucket | None = None

    @staticmethod
    def _refill(bucket: TokenBucket, rate: float, burst: float, now: float) -> None:
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now

    def admit(self, address: str) -> int | None:
        """None when the request may pass (and is counted); else the seconds to wait."""
        now = self.clock()
        bucket = self.buckets.pop(address, None) or TokenBucket(self.burst, now)
        self.buckets[address] = bucket   # most recently seen last
        if len(self.buckets) > self.max_addresses:
            self.buckets.popitem(last=False)
        if self.total is None:
            self.total = TokenBucket(self.total_burst, now)
        self._refill(bucket, self.rate, self.burst, now)
        self._refill(self.total, self.total_rate, self.total_burst, now)
        if bucket.tokens < 1:
            return math.ceil((1 - bucket.tokens) / self.rate)
        if self.total.tokens < 1:
            return math.ceil((1 - self.total.tokens) / self.total_rate)
        bucket.tokens -= 1
        self.total.tokens -= 1
        return None


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class Admission:
    """CORS preflights, then the rate limits. ``respond(problem, scope)`` renders a refusal."""

    def __init__(self, app, settings: Settings, limiter: RateLimiter, respond: Callable[[Problem, Any], Any]):
        self.app, self.limiter, self.respond = app, limiter, respond
        self.origins = frozenset(settings.cors_origins)
        self.max_age = str(600)
        self.max_header_bytes = settings.max_header_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # h11's own limit only bounds a head still arriving; one that came in a single read is
        # counted here (431, as RFC 6585 says).
        if sum(len(name) + len(value) + 4 for name, value in scope["headers"]) > self.max_header_bytes:
            problem = Problem(c.REQUEST_TOO_LARGE, f"请求头过大（上限 {self.max_header_bytes // 1024} KB）", "headers")
            problem.status = 431
            return await self.respond(problem, scope)(scope, receive, send)
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
            return await self._preflight(scope, receive, send)
        if scope["path"] not in UNMETERED:
            client = scope.get("client")
            wait = self.limiter.admit(client[0] if client else "unknown")
            if wait is not None:
                problem = Problem(c.RATE_LIMITED, RATE_LIMITED_MESSAGE, None, [{"retry_after_seconds": str(wait)}])
                return await self.respond(problem, scope)(scope, receive, send)
        await self.app(scope, receive, send)

    async def _preflight(self, scope, receive, send):
        if _header(scope, b"origin") not in self.origins:
            problem = Problem(c.FORBIDDEN, "不允许从该网站跨域访问")
            return await self.respond(problem, scope)(scope, receive, send)
        await send({"type": "http.response.start", "status": 204, "headers": [
            (b"access-control-allow-methods", CORS_METHODS.encode()),
            (b"access-control-allow-headers", CORS_HEADERS.encode()),
            (b"access-control-max-age", self.max_age.encode())]})
        await send({"type": "http.response.body", "body": b""})


# -- the headers every answer carries ----------------------------------------------------------

class ResponseHeaders:
    def __init__(self, app, settings: Settings):
        self.app = app
        self.origins = frozenset(settings.cors_origins)
        self.common = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                       (b"x-frame-options", b"DENY")]
        if settings.hsts_seconds:
            self.common.append((b"strict-transport-security",
                                f"max-age={settings.hsts_seconds}; includeSubDomains".encode()))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        api = scope["path"].startswith(API_PREFIX)
        origin = _header(scope, b"origin")
        allowed = origin if origin is not None and origin in self.origins else None

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.common if name not in present]
                content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
                if b"content-security-policy" not in present and not content_type.startswith(b"text/html"):
                    headers.append((b"content-security-policy", JSON_CSP))
                if api and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                if self.origins:
                    headers.append((b"vary", b"Origin"))
                if allowed is not None:
                    headers += [(b"access-control-allow-origin", allowed.encode("latin-1")),
                                (b"access-control-expose-headers", CORS_EXPOSED.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def install_inner(app, settings: Settings, respond: Callable[[Problem, Any], Any]) -> None:
    """Admission, inside the core's request-id middleware (so refusals are logged and counted)."""
    app.state.limiter = RateLimiter(settings)
    app.add_middleware(Admission, settings=settings, limiter=app.state.limiter, respond=respond)


def install_outer(app, settings: Settings) -> None:
    """The real client address and the response headers, around everything else."""
    app.add_middleware(RealClient, trusted_proxies=settings.trusted_proxies)
    app.add_middleware(ResponseHeaders, settings=settings)
