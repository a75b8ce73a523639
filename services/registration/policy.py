"""Registration policy per province: exam window, re-registration window, continuing-education
hours, and the longest validity a paper certificate can show. Loaded from a YAML file
(``REGISTRATION_POLICY_PATH``, default ``services/registration/policy.yaml``) once at start."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from swms.contracts.common import Level

KEYS = ("first_registration_window_years", "re_registration_window_months", "continuing_education_hours",
        "registration_validity_years")


@dataclass(frozen=True)
class ProvincePolicy:
    first_registration_window_years: int
    re_registration_window_months: int
    continuing_education_hours: dict[str, float]
    registration_validity_years: int

    def required_hours(self, level: str) -> float:
        return float(self.continuing_education_hours[Level(level).value])


class PolicyError(ValueError):
    pass


def _check(where: str, values: dict[str, Any], complete: bool) -> None:
    if not isinstance(values, dict):
        raise PolicyError(f"{where}: expected a mapping")
    unknown = set(values) - set(KEYS)
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    if complete and set(KEYS) - set(values):
        raise PolicyError(f"{where}: missing keys {sorted(set(KEYS) - set(values))}")
    for key in ("first_registration_window_years", "re_registration_window_months",
                "registration_validity_years"):
        if key in values and (not isinstance(values[key], int) or isinstance(values[key], bool)
                              or not 0 < values[key] <= 120):
            raise PolicyError(f"{where}.{key}: expected a whole number from 1 to 120")
    hours = values.get("continuing_education_hours")
    if hours is not None:
        if not isinstance(hours, dict):
            raise PolicyError(f"{where}.continuing_education_hours: expected level: hours")
        for level, value in hours.items():
            if level not in {lv.value for lv in Level}:
                raise PolicyError(f"{where}.continuing_education_hours: unknown level {level!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1000:
                raise PolicyError(f"{where}.continuing_education_hours.{level}: expected hours 0–1000")
        if complete and set(hours) != {lv.value for lv in Level}:
            raise PolicyError(f"{where}.continuing_education_hours: every level needs its hours")


class Policy:
    def __init__(self, document: dict[str, Any]):
        if not isinstance(document, dict) or "default" not in document:
            raise PolicyError("policy file needs a 'default' section")
        _check("default", document["default"], complete=True)
        self._default = document["default"]
        self._provinces: dict[str, dict[str, Any]] = {}
        for province, values in document.items():
            if province == "default":
                continue
            province = str(province)
            if not re.fullmatch(r"\d{2}", province):
                raise PolicyError(f"{province!r}: provinces are 2-digit codes (quote them in YAML)")
            _check(province, values, complete=False)
            self._provinces[province] = values

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        return cls(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})

    def for_region(self, region_code: str) -> ProvincePolicy:
        merged = copy.deepcopy(self._default)
        override = self._provinces.get((region_code or "")[:2], {})
        for key, value in override.items():
            if key == "continuing_education_hours":
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return ProvincePolicy(**merged)
