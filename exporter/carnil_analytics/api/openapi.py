"""The OpenAPI 3.1 document, generated from the endpoint declarations and their models."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import version
from typing import Any

from pydantic import BaseModel, TypeAdapter

from ..models import ID_PATTERN
from .endpoints import ID_PARAMS, Endpoint
from .problems import PROBLEM_JSON

REF = "#/components/schemas/{model}"


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str


class ProblemDocument(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = None
    index: int | None = None


_COMMON_ERRORS = {
    400: "Invalid input", 401: "No or bad API key", 402: "Insufficient credits (enforce)",
    403: "The key's role or customer may not call this", 404: "Not found",
    413: "Body or batch too large", 415: "Unsupported media type",
    422: "Idempotency key reused with another payload", 429: "Usage limit exceeded (enforce)",
    503: "Storage unavailable; retry after Retry-After seconds",
}


class _Components:
    """Collects the JSON Schemas of every model, referenced by name."""

    def __init__(self):
        self.schemas: dict[str, Any] = {}

    def schema(self, annotation: Any, mode: str) -> dict:
        generated = TypeAdapter(annotation).json_schema(ref_template=REF, mode=mode)
        self.schemas.update(generated.pop("$defs", {}))
        return generated


def document(endpoints: Iterable[Endpoint]) -> dict:
    components = _Components()
    paths: dict[str, dict] = {}
    operation_ids = set()
    for endpoint in endpoints:
        if endpoint.name in operation_ids:
            raise ValueError(f"two endpoints are named {endpoint.name!r}")
        operation_ids.add(endpoint.name)
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = \
            _operation(endpoint, components)
    components.schemas["ProblemDocument"] = components.schema(ProblemDocument, "serialization")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Carnil Analytics", "version": version("carnil-analytics"),
                 "description": "Usage metering, AI-cost tracking, limits and credits."},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(endpoint: Endpoint, components: _Components) -> dict:
    roles = "public" if endpoint.public else ", ".join(
        sorted({"admin", *endpoint.roles} | ({"customer (own)"} if endpoint.customer_scoped
                                             else set())))
    operation: dict[str, Any] = {
        "operationId": endpoint.name,
        "summary": endpoint.summary,
        "description": f"Roles: {roles}.",
        "tags": [endpoint.tag],
        "parameters": _parameters(endpoint, components),
        "responses": _responses(endpoint, components),
    }
    if not endpoint.public:
        operation["security"] = [{"bearer": []}]
    if endpoint.body is not None:
        body = components.schema(endpoint.body, "validation")
        content = {media: {"schema": body} for media in endpoint.body_media_types}
        if "application/x-ndjson" in content:  # one event per line
            content["application/x-ndjson"]["schema"] = \
                components.schema(endpoint.body.__args__[0], "validation")
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def _parameters(endpoint: Endpoint, components: _Components) -> list[dict]:
    params = []
    for name in _path_names(endpoint.path):
        schema = {"type": "string"}
        if name in ID_PARAMS:
            schema["pattern"] = ID_PATTERN
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if endpoint.query is not None:
        query = components.schema(endpoint.query, "validation")
        for name, schema in query.get("properties", {}).items():
            params.append({"name": name, "in": "query",
                           "required": name in query.get("required", []), "schema": schema})
    return params


def _responses(endpoint: Endpoint, components: _Components) -> dict:
    ok: dict[str, Any] = {"description": endpoint.summary}
    if endpoint.response is not None:
        ok["content"] = {"application/json": {
            "schema": components.schema(endpoint.response, "serialization")}}
    elif endpoint.response_media_type is not None:
        ok["content"] = {endpoint.response_media_type: {"schema": {"type": "string"}}}
    responses = {str(endpoint.status): ok}
    errors = set(endpoint.errors) | ({400, 401, 403} if not endpoint.public else set())
    if "{" in endpoint.path:  # an empty path parameter matches no route
        errors.add(404)
    if not endpoint.public:
        errors.add(503)
    problem = {PROBLEM_JSON: {"schema": {"$ref": REF.format(model="ProblemDocument")}}}
    for status in sorted(errors):
        responses[str(status)] = {"description": _COMMON_ERRORS[status], "content": problem}
    return responses


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
