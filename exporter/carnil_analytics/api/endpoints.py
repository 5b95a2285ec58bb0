"""Routes declared once: the Flask rule, its roles, its models, and its OpenAPI operation.

A view is declared with ``@api.endpoint(...)`` on an ``ApiBlueprint``; the declaration wires
authentication, authorization, path and query validation and response serialization, and is
what ``openapi.py`` documents, so the document cannot drift from the code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from werkzeug.routing import PathConverter

from ..config import Settings
from ..errors import FieldError, ValidationError
from ..models import validate_identifier
from .auth import authenticate, authorize
from .problems import invalid

_PATH_PARAM = re.compile(r"{(\w+)}")
# Path parameters that are ids; "/" is allowed in ids, so they match across segments.
ID_PARAMS = {"customer_id": "customer_id", "feature_id": "feature_id"}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # OpenAPI form: /v1/customers/{customer_id}/report
    summary: str
    roles: frozenset[str]  # roles allowed besides admin; empty and public=True: anyone
    customer_scoped: bool = False  # customer keys may call it for their own customer
    public: bool = False
    public_when: Callable[[Settings], bool] | None = None  # public if the settings say so
    query: type[BaseModel] | None = None
    body: Any = None  # the request body's type, for the document
    body_media_types: tuple[str, ...] = ("application/json",)
    response: Any = None  # the 2xx body's type; None for an empty answer
    response_media_type: str | None = None  # a text answer of this media type instead
    status: int = 200
    errors: tuple[int, ...] = ()  # error statuses beyond the ones every route may answer
    tag: str = "usage"
    name: str = field(default="", compare=False)

    @property
    def flask_rule(self) -> str:
        return _PATH_PARAM.sub(lambda m: f"<segment:{m.group(1)}>", self.path)

    @cached_property
    def response_adapter(self) -> TypeAdapter | None:
        return None if self.response is None else TypeAdapter(self.response)


class SegmentConverter(PathConverter):
    """A path parameter: any characters (a "/" too, since ids may hold one), so a malformed id
    reaches validation and is answered 400, not 404."""

    regex = "(?s:.+?)"
    part_isolating = False  # may span "/"; Werkzeug guesses from the regex otherwise


class ApiBlueprint(Blueprint):
    """A blueprint whose routes are ``Endpoint`` declarations."""

    def __init__(self, name: str, import_name: str, **kwargs):
        super().__init__(name, import_name, **kwargs)
        self.endpoints: list[Endpoint] = []

    def endpoint(self, method: str, path: str, summary: str, **declared):
        def register(view: Callable) -> Callable:
            endpoint = Endpoint(method, path, summary, name=view.__name__, **declared)
            self.endpoints.append(endpoint)
            self.add_url_rule(endpoint.flask_rule, view.__name__, _wrap(endpoint, view),
                              methods=[method])
            return view
        return register


def _wrap(endpoint: Endpoint, view: Callable) -> Callable:
    def handle(**path: str) -> Response:
        g.route = endpoint.path
        if not endpoint.public and not (
                endpoint.public_when and endpoint.public_when(current_app.extensions[
                    "carnil.tracker"].settings)):
            principal = authenticate(current_app.extensions["carnil.keys"])
            g.key_id = principal.key_id
            authorize(principal, endpoint.roles, endpoint.customer_scoped,
                      path.get("customer_id"))
        arguments = {name: _path_id(name, value) for name, value in path.items()}
        if endpoint.query is not None:
            arguments["query"] = parse_query(endpoint.query)
        result = view(**arguments)
        if isinstance(result, Response):
            return result
        if endpoint.response_adapter is None:
            return Response(status=endpoint.status)
        return Response(endpoint.response_adapter.dump_json(result), status=endpoint.status,
                        mimetype="application/json")
    handle.__name__ = view.__name__
    return handle


def _path_id(name: str, value: str) -> str:
    try:
        return validate_identifier(value, ID_PARAMS[name]) if name in ID_PARAMS else value
    except ValidationError as exc:
        raise invalid([FieldError(("path", name), e.msg) for e in exc.errors]) from None


def parse_query(model: type[BaseModel]) -> BaseModel:
    """The query string as ``model`` (lax: query values are strings), or a 400."""
    try:
        return model.model_validate(request.args.to_dict(flat=True))
    except PydanticValidationError as exc:
        raise invalid([FieldError(("query", *e["loc"]), e["msg"]) for e in exc.errors()],
                      "the query string is not valid") from None
