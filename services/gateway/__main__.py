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
                access_log=False, proxy_headers=False, server_header=False, date_header=True)


if __name__ == "__main__":
    main()
