"""Alembic, shared: each service keeps its own ``migrations/versions``; this holds the env logic.

``python -m swms.migrations <service> [--url URL]`` upgrades that service's database to head.
Deployment runs it as a job before the service starts; local runs and tests call :func:`upgrade`.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

from swms.config import REPO_ROOT, load_config, service_config_path


def alembic_config(service_name: str, url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(REPO_ROOT / "services" / service_name / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["service_name"] = service_name
    return cfg


def upgrade(service_name: str, url: str) -> None:
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(service_name, url), "head")


def run_env(context) -> None:
    """Body of every service's ``migrations/env.py``."""
    from sqlalchemy import create_engine

    cfg = context.config
    service_name = cfg.attributes.get("service_name") or Path(cfg.get_main_option("script_location")).parent.name
    metadata = importlib.import_module(f"services.{service_name}.models").metadata
    url = cfg.get_main_option("sqlalchemy.url")
    connectable = cfg.attributes.get("connection") or create_engine(url)
    with connectable.connect() as connection:
        # render_as_batch lets ALTER work on SQLite as well as PostgreSQL.
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


def main() -> None:
    parser = argparse.ArgumentParser(description="Upgrade a service's database to the newest schema.")
    parser.add_argument("service")
    parser.add_argument("--url", help="database URL (default: DB_URL from the service's config)")
    args = parser.parse_args()
    url = args.url or load_config(service_config_path(args.service))["DB_URL"]
    upgrade(args.service, url)
    print(f"{args.service}: database at head")


if __name__ == "__main__":
    main()
