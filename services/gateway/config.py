"""The gateway's settings, from environment variables (docs/configuration.md, "gateway")."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    amqp_uri: str = "pyamqp://guest:guest@localhost:5672/"
    host: str = "0.0.0.0"
    port: int = 8080
    rpc_timeout: float = 10.0           # seconds a service may take before 504 UPSTREAM_TIMEOUT
    json_body_limit: int = 64 * 1024    # bytes of a JSON request body (413 REQUEST_TOO_LARGE above)
    feedback_body_limit: int = 7 * 1024 * 1024   # 反馈 carries its proof inline (5 MB as base64)

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
        )
