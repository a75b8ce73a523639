"""Runs the gateway under uvicorn: ``python -m services.gateway`` (settings: docs/configuration.md)."""
from __future__ import annotations

import logging.config

import uvicorn

from services.gateway.app import create_app
from services.gateway.config import Settings

LOGGING = {
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"json": {"()": "swms.logs.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"level": "INFO", "handlers": ["console"]},
    # uvicorn's own access log prints full paths (ID numbers, tokens in query strings): ours logs templates.
    "loggers": {"uvicorn.access": {"level": "WARNING"}, "aiormq": {"level": "WARNING"},
                "aio_pika": {"level": "WARNING"}},
}


def main() -> None:
    settings = Settings.from_env()
    logging.config.dictConfig(LOGGING)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                access_log=False, proxy_headers=False, server_header=False, date_header=True,
                # Slow or greedy clients (docs/http-api.md): idle keep-alive connections closed,
                # request line + headers capped, connections beyond the limit answered 503 at once.
                # X-Forwarded-For is ours to read (edge.RealClient), never uvicorn's.
                timeout_keep_alive=settings.keep_alive_seconds, h11_max_incomplete_event_size=settings.max_header_bytes,
                limit_concurrency=settings.max_connections, timeout_graceful_shutdown=20,
                # uvloop: ~30 % less CPU per request (bench/gateway.py). h11 named, not "auto": the
                # header limit above is h11's, and httptools (picked by "auto" if installed) has none.
                loop="uvloop", http="h11")


if __name__ == "__main__":
    main()
