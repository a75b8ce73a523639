"""Writes the JSON Schemas of every RPC method and event into docs/schemas/, and the HTTP gateway's
OpenAPI document into docs/openapi.json (all from the pydantic contracts, so they cannot drift:
tests/unit/test_docs.py fails when a file is out of date).

  python -m tools.export_contracts
"""
from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

from swms.config import REPO_ROOT
from swms.contracts import events as event_contracts
from swms.devkeys import SERVICES

SCHEMA_DIR = REPO_ROOT / "docs" / "schemas"
OPENAPI_FILE = REPO_ROOT / "docs" / "openapi.json"


def rpc_methods() -> dict[str, dict]:
    """{"identity.sign_up": {"request": Model|None, "response": Model|None, "doc": str}, ...}"""
    found = {}
    for name in SERVICES:
        module = importlib.import_module(f"services.{name}.service")
        cls = next(c for _, c in inspect.getmembers(module, inspect.isclass) if getattr(c, "name", None) == name)
        for attr, method in sorted(vars(cls).items()):
            if hasattr(method, "request_model"):
                found[f"{name}.{attr}"] = {"request": method.request_model, "response": method.response_model,
                                           "doc": inspect.getdoc(method) or ""}
    return found


def events() -> dict[str, type]:
    return {f"{cls.source}.{cls.event_type}": cls
            for cls in vars(event_contracts).values()
            if inspect.isclass(cls) and issubclass(cls, event_contracts.Event)
            and hasattr(cls, "event_type")}  # abstract bases declare no event_type


def schema_files() -> dict[Path, str]:
    files = {}
    for method, spec in rpc_methods().items():
        for part in ("request", "response"):
            model = spec[part]
            schema = model.model_json_schema() if model else {"type": "null"}
            files[SCHEMA_DIR / "rpc" / f"{method}.{part}.json"] = json.dumps(schema, ensure_ascii=False, indent=2) + "\n"
    for name, model in events().items():
        schema = model.model_json_schema()
        schema["x-exchange"] = f"{model.source}.events"
        schema["x-routing-key"] = model.event_type
        files[SCHEMA_DIR / "events" / f"{name}.json"] = json.dumps(schema, ensure_ascii=False, indent=2) + "\n"
    files[OPENAPI_FILE] = openapi_text()
    return files


def openapi_text() -> str:
    from services.gateway.openapi import build

    return json.dumps(build(), ensure_ascii=False, indent=2) + "\n"


def main() -> None:
    for folder in ("rpc", "events"):
        for old in (SCHEMA_DIR / folder).glob("*.json"):
            old.unlink()
    for path, text in schema_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(schema_files()) - 1} schemas under {SCHEMA_DIR.relative_to(REPO_ROOT)} "
          f"and {OPENAPI_FILE.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
