"""Config loading shared by services, CLIs and tools.

Services get their config from ``nameko run --config services/<name>/config.yaml``; the YAML uses
``${ENV_VAR:default}`` so that deployment sets everything through the environment. CLIs and tools
load the same file through :func:`load_config` so there is one source of truth per service.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
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


# ---- numeric settings, checked at start ---------------------------------------------------------

class ConfigError(RuntimeError):
    """A setting the service cannot work with: it stops the service at start, naming the variable."""


@dataclass(frozen=True)
class Number:
    """One numeric setting: its default and the range it must lie in (ends included).
    ``whole``: a whole number (a count, a port, years); otherwise any number (seconds, hours)."""
    default: int | float
    low: int | float
    high: int | float
    whole: bool = True


# Read by the shared plumbing of every service (nameko's worker pool, swms.db, swms.ops).
COMMON = {
    "max_workers": Number(10, 1, 1000),
    "DB_POOL_SIZE": Number(0, 0, 1000),
    "OPS_PORT": Number(0, 0, 65535),
    "EXIT_AFTER_DEATH_SECONDS": Number(30, 1, 3600),
}
_ENV_REF = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*\$\{([A-Za-z0-9_]+)", re.M)


class Numbers:
    """A service's numeric settings (its own plus :data:`COMMON`), all checked by :meth:`check`
    when the service starts (:class:`swms.startup.CheckedNumbers`) and read through :meth:`get` everywhere.

    A value may come from YAML (an int or a float) or as text (tests, CLIs); empty means the
    default. A refusal names the environment variable that sets the key in the service's
    config.yaml (``PHOTO_MAX_BYTES`` is set by ``PROFILE_PHOTO_MAX_BYTES``)."""

    def __init__(self, service: str | None, specs: dict[str, Number] | None = None):
        self.service = service      # None: the shared settings, read outside any one service
        self.specs = {**COMMON, **(specs or {})}
        self._env: dict[str, str] | None = None

    def variable(self, key: str) -> str:
        if self._env is None:
            path = service_config_path(self.service) if self.service else None
            text = path.read_text(encoding="utf-8") if path is not None and path.exists() else ""
            self._env = dict(_ENV_REF.findall(text))
        return self._env.get(key, key)

    def get(self, config: dict[str, Any], key: str) -> int | float:
        spec = self.specs[key]
        raw = config.get(key)
        value = spec.default if raw is None or raw == "" else _parse(raw, spec.whole)
        if value is None or not spec.low <= value <= spec.high:
            kind = "a whole number" if spec.whole else "a number"
            raise ConfigError(f"{self.variable(key)} must be {kind} from {spec.low} to {spec.high}, "
                              f"not {raw!r} (see docs/configuration.md)")
        return value

    def check(self, config: dict[str, Any]) -> dict[str, int | float]:
        """Every setting, checked; ConfigError naming each bad one."""
        values, problems = {}, []
        for key in self.specs:
            try:
                values[key] = self.get(config, key)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))
        return values


def _parse(raw: Any, whole: bool) -> int | float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        text = raw.strip()
        try:
            raw = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError:
            return None
    if isinstance(raw, float):
        if math.isnan(raw) or math.isinf(raw):
            return None
        if whole:
            return int(raw) if raw.is_integer() else None
        return raw
    if isinstance(raw, int):
        return raw
    return None


SHARED = Numbers(None)   # max_workers, DB_POOL_SIZE, OPS_PORT where no service is at hand (swms.db, swms.ops)
