"""The gateway's settings, from environment variables (docs/configuration.md, "gateway")."""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    amqp_uri: str = "pyamqp://guest:guest@localhost:5672/"
    host: str = "0.0.0.0"
    port: int = 8080
    rpc_timeout: float = 10.0           # seconds a service may take before 504 UPSTREAM_TIMEOUT
    json_body_limit: int = 64 * 1024    # bytes of a JSON request body (413 REQUEST_TOO_LARGE above)
    feedback_body_limit: int = 7 * 1024 * 1024   # 反馈 carries its proof inline (5 MB as base64)
    # -- the edge (services/gateway/edge.py, public.py) --
    trusted_proxies: tuple[str, ...] = ()   # CIDRs whose X-Forwarded-For is believed; none by default
    rate_per_address: float = 10.0      # requests per second one client address may keep up
    burst_per_address: int = 40         # ... and make at once
    rate_total: float = 500.0           # requests per second of all clients together (this replica)
    burst_total: int = 1000
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API; none by default
    hsts_seconds: int = 31536000        # Strict-Transport-Security max-age; 0: no header
    trust_anchor_seconds: int = 300     # how long the signing certificates are cached (and max-age)
    status_list_cache_seconds: float = 2.0   # how long a status list is kept before asking again
    status_list_max_age_seconds: int = 120   # Cache-Control max-age of a published status list
    keep_alive_seconds: int = 5         # an idle keep-alive connection is closed after this
    max_header_bytes: int = 16384       # request line + headers (h11); above: 400 and closed
    max_connections: int = 2000         # connections + requests in progress; above: 503 at once
    # -- the web portal (portal/, served by services/gateway/portal.py) --
    portal_dir: str = "portal"          # its static files (relative: to the repository root); empty: not served
    portal_storage_origins: tuple[str, ...] = ()   # object storage the browser posts uploads to (CSP connect-src)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            amqp_uri=env.get("AMQP_URI", cls.amqp_uri),
            host=env.get("GATEWAY_HOST", cls.host),
            port=int(env.get("GATEWAY_PORT", cls.port)),
            rpc_timeout=float(env.get("GATEWAY_RPC_TIMEOUT_SECONDS", cls.rpc_timeout)),
            json_body_limit=int(env.get("GATEWAY_JSON_BODY_LIMIT_BYTES", cls.json_body_limit)),
            feedback_body_limit=int(env.get("GATEWAY_FEEDBACK_BODY_LIMIT_BYTES", cls.feedback_body_limit)),
            **edge_settings(env),
            **portal_settings(env),
        )


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


# (field, variable, type, smallest value allowed)
_EDGE_NUMBERS = (
    ("rate_per_address", "GATEWAY_RATE_PER_ADDRESS", float, 0.001),
    ("burst_per_address", "GATEWAY_BURST_PER_ADDRESS", int, 1),
    ("rate_total", "GATEWAY_RATE_TOTAL", float, 0.001),
    ("burst_total", "GATEWAY_BURST_TOTAL", int, 1),
    ("hsts_seconds", "GATEWAY_HSTS_SECONDS", int, 0),
    ("trust_anchor_seconds", "GATEWAY_TRUST_ANCHOR_CACHE_SECONDS", int, 0),
    ("status_list_cache_seconds", "GATEWAY_STATUS_LIST_CACHE_SECONDS", float, 0),
    ("status_list_max_age_seconds", "GATEWAY_STATUS_LIST_MAX_AGE_SECONDS", int, 0),
    ("keep_alive_seconds", "GATEWAY_KEEP_ALIVE_SECONDS", int, 1),
    ("max_header_bytes", "GATEWAY_MAX_HEADER_BYTES", int, 1024),
    ("max_connections", "GATEWAY_MAX_CONNECTIONS", int, 1),
)
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")


def edge_settings(env) -> dict:
    """The edge's settings, checked: a malformed proxy CIDR, origin or number stops the gateway at
    start (a typo must not quietly trust every address, or none)."""
    proxies = _list(env.get("GATEWAY_TRUSTED_PROXIES", ""))
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ValueError(f"GATEWAY_TRUSTED_PROXIES: {proxy!r} is not an address or CIDR") from None
    origins = _list(env.get("GATEWAY_CORS_ORIGINS", ""))
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise ValueError(f"GATEWAY_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port])")
    values: dict = {"trusted_proxies": proxies, "cors_origins": origins}
    for field, variable, kind, smallest in _EDGE_NUMBERS:
        text = str(env.get(variable, getattr(Settings, field)))
        try:
            values[field] = kind(text)
        except ValueError:
            raise ValueError(f"{variable}: {text!r} is not a number") from None
        if values[field] < smallest:
            raise ValueError(f"{variable}: {text!r} is below {smallest}")
    return values


def portal_settings(env) -> dict:
    """Where the portal's files are and which storage origins its pages may post files to (the
    presigned upload forms and download links point there: docs/portal.md)."""
    origins = _list(env.get("GATEWAY_PORTAL_STORAGE_ORIGINS", ""))
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise ValueError(f"GATEWAY_PORTAL_STORAGE_ORIGINS: {origin!r} is not an origin (scheme://host[:port])")
    return {"portal_dir": env.get("GATEWAY_PORTAL_DIR", Settings.portal_dir).strip(),
            "portal_storage_origins": origins}


def variables() -> dict[str, str]:
    """Every environment variable the gateway reads, with its default as text, found by watching
    ``from_env`` read them (for the deployment files and their static checks)."""
    seen: dict[str, str] = {}

    class Watch(dict):
        def get(self, key, default=None):
            seen[key] = str(default)
            return default

    Settings.from_env(Watch())
    return dict(sorted(seen.items()))
