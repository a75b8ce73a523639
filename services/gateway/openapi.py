"""The OpenAPI 3.1 document, generated from the operation table and the contract models (never
written by hand). ``python -m tools.export_contracts`` writes it to docs/openapi.json; a unit test
fails when that copy is out of date.

Schemas come from pydantic (validation mode for what clients send, serialisation mode for what
they get back); a body whose request model also has path fields is that model without them
(``<Model>Body``). Every error response is ``application/problem+json`` with the ``Problem`` model.
"""
from __future__ import annotations

import copy
from http import HTTPStatus
from typing import Any

from pydantic.json_schema import models_json_schema

from services.gateway import public
from services.gateway.operations import OPERATIONS, Operation
from swms.contracts.problem import Problem

REF = "#/components/schemas/{model}"
PROBLEM_JSON = "application/problem+json"

API_DESCRIPTION = """HTTPS + JSON in front of the SWMS services (全国社会工作信息系统).

Send `Authorization: Bearer <access_token>` (from `POST /api/v1/sessions`) on every operation that
needs a login. Every refusal is `application/problem+json` (RFC 9457) with a stable `code`, the
Chinese `message` (also as `detail`), the `field` at fault and `details`; codes are listed in
docs/contracts.md. `X-Request-ID` is echoed (or made up) on every response.
Files never pass through this API: ask for an upload form, post the file straight to object storage,
then confirm it here."""

_ERROR_TEXT = {
    401: "no token, or a forged, malformed or expired one; wrong login or password",
    403: "the caller may not act on this person, region or level",
    404: "no such record (or not visible to the caller)",
    405: "the path exists, not with this method",
    409: "the current state does not allow this",
    413: "request body too large",
    422: "malformed request: JSON, content type, a field (the field is named)",
    429: "too many attempts: retry after the Retry-After seconds",
    500: "unexpected failure (no detail is given)",
    503: "a service this call needs is not available: retry later",
    504: "a service this call needs did not answer in time: retry later",
}


def _error_statuses(operation: Operation) -> list[int]:
    statuses = [404, 405, 422, 429, 500, 503, 504]
    if operation.auth or operation.rpc.startswith("identity."):
        statuses += [401, 403]
    if operation.method in ("POST", "PUT", "PATCH", "DELETE"):
        statuses += [409]
    if operation.takes_body:
        statuses += [413]
    return sorted(set(statuses))


def _responses(operation: Operation, response_schema: dict) -> dict[str, Any]:
    request_id = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    responses: dict[str, Any] = {
        "200": {"description": "OK", "headers": request_id,
                "content": {"application/json": {"schema": response_schema}}}}
    for status in _error_statuses(operation):
        headers = dict(request_id)
        if status in (429, 503):
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        if status == 405:
            headers["Allow"] = {"description": "the methods this path takes", "schema": {"type": "string"}}
        responses[str(status)] = {"description": f"{HTTPStatus(status).phrase}: {_ERROR_TEXT[status]}",
                                  "headers": headers,
                                  "content": {PROBLEM_JSON: {"schema": {"$ref": REF.format(model="Problem")}}}}
    responses["default"] = {"description": "any other refusal", "headers": request_id,
                            "content": {PROBLEM_JSON: {"schema": {"$ref": REF.format(model="Problem")}}}}
    return responses


def _model_schema(ref: dict, components: dict) -> tuple[str, dict]:
    name = ref["$ref"].rsplit("/", 1)[-1]
    return name, components[name]


def build() -> dict[str, Any]:
    models = []
    for operation in OPERATIONS:
        if operation.request is not None:
            models.append((operation.request, "validation"))
        models.append((operation.response, "serialization"))
    models.append((Problem, "serialization"))
    models += public.OPENAPI_MODELS
    refs, top = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    components: dict[str, Any] = dict(sorted(top.get("$defs", {}).items()))

    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        entry: dict[str, Any] = {
            "operationId": operation.operation_id, "summary": operation.summary, "tags": [operation.tag],
            "description": f"RPC `{operation.rpc}` (docs/contracts.md).",
            "security": [{"bearerAuth": []}] if operation.auth else [{}, {"bearerAuth": []}],
        }
        parameters = [{"$ref": "#/components/parameters/X-Request-ID"}]
        if operation.request is not None:
            name, schema = _model_schema(refs[(operation.request, "validation")], components)
            properties, required = schema.get("properties", {}), set(schema.get("required", []))
            for field in operation.path_fields:
                parameters.append({"name": field, "in": "path", "required": True,
                                   "schema": properties[field]})
            for field in operation.query_fields:
                parameters.append({"name": field, "in": "query", "required": field in required,
                                   "schema": properties[field]})
            if operation.takes_body:
                if operation.path_fields:
                    body = copy.deepcopy(schema)
                    body["title"] = f"{name}Body"
                    body["properties"] = {k: v for k, v in properties.items() if k not in operation.path_fields}
                    body["required"] = [k for k in schema.get("required", []) if k not in operation.path_fields]
                    if not body["required"]:
                        del body["required"]
                    name = f"{name}Body"
                    components[name] = body
                entry["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": {"$ref": REF.format(model=name)}}}}
        entry["parameters"] = parameters
        entry["responses"] = _responses(operation, refs[(operation.response, "serialization")])
        paths.setdefault(operation.route, {})[operation.method.lower()] = entry
    for path, method, entry in public.openapi_entries(refs, _responses):
        paths.setdefault(path, {})[method] = entry

    return {
        "openapi": "3.1.0",
        "info": {"title": "SWMS HTTP API", "version": "1", "description": API_DESCRIPTION},
        "tags": [{"name": name} for name in dict.fromkeys([*(operation.tag for operation in OPERATIONS), "public"])],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                               "description": "access_token from POST /api/v1/sessions"}},
            "parameters": {"X-Request-ID": {
                "name": "X-Request-ID", "in": "header", "required": False,
                "description": "your id for this request (1-128 of A-Z a-z 0-9 . _ : -); else one is made",
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}}},
            "headers": {
                "X-Request-ID": {"description": "the request's id: the one sent, or a new one",
                                 "schema": {"type": "string"}},
                "Retry-After": {"description": "seconds to wait before trying again",
                                "schema": {"type": "integer"}}},
        },
    }


def query_schemas(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{operationId: {query field: schema}} for turning query text into JSON values."""
    found = {}
    for methods in document["paths"].values():
        for entry in methods.values():
            found[entry["operationId"]] = {p["name"]: p["schema"] for p in entry["parameters"]
                                           if p.get("in") == "query"}
    return found


def response_schemas(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{operationId: schema of its 200 answer}, for the JSON ones (the trust anchor's PEM and JWK are not)."""
    found = {}
    for methods in document["paths"].values():
        for entry in methods.values():
            content = entry["responses"]["200"]["content"]
            if "application/json" in content:
                found[entry["operationId"]] = content["application/json"]["schema"]
    return found
