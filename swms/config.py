"""Config loading shared by services, CLIs and tools.

Services get their config from ``nameko run --config services/<name>/config.yaml``; the YAML uses
``${ENV_VAR:default}`` so that deployment sets everything through the environment. CLIs and tools
load the same file through :func:`load_config` so there is one source of truth per service.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    from nameko.cli.main import setup_yaml_parser

    setup_yaml_parser()
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def service_config_path(service_name: str) -> Path:
    return REPO_ROOT / "services" / service_name / "config.yaml"


def required(config: dict[str, Any], key: str) -> Any:
    value = config.get(key)
    if value in (None, ""):
        raise RuntimeError(f"config key {key} is not set (see docs/configuration.md)")
    return value
