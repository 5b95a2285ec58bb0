"""Issuing and revoking API keys."""

from __future__ import annotations

from flask import current_app
from pydantic import TypeAdapter

from . import bodies
from .endpoints import ApiBlueprint
from .problems import Problem
from .schemas import IssuedKey, KeyRequest

api = ApiBlueprint("keys", __name__)
_KEY_REQUEST = TypeAdapter(KeyRequest)


@api.endpoint("POST", "/v1/keys", "Create an API key (the key is shown once)",
              roles=frozenset(), body=KeyRequest, response=IssuedKey, status=201,
              errors=(400, 415), tag="keys")
def create_key():
    request: KeyRequest = bodies.json_body(_KEY_REQUEST)
    issued = current_app.extensions["carnil.keys"].create(request.role, request.customer_id)
    return IssuedKey(id=issued.principal.key_id, key=issued.key, role=issued.principal.role,
                     customer_id=issued.principal.customer_id)


@api.endpoint("DELETE", "/v1/keys/{key_id}", "Revoke an API key", roles=frozenset(),
              status=204, errors=(404,), tag="keys")
def revoke_key(key_id: str):
    if not current_app.extensions["carnil.keys"].revoke(key_id):
        raise Problem(404, "not-found", "Not Found", f"no live key with id {key_id!r}")
