"""Errors as RFC 9457 problem documents: every failure a client can cause, and how it is told.

Every error leaves the service as ``application/problem+json`` with ``type``, ``title``,
``status`` and ``detail`` (plus ``errors`` for validation). Nothing a client sends can turn
into a 500 or a traceback: unexpected exceptions are logged and answered with a bare 500.
"""

from __future__ import annotations

import contextlib
import json
import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ..errors import (
    CarnilError,
    FieldError,
    IdempotencyConflict,
    InsufficientCredits,
    StorageUnavailable,
    UsageLimitExceeded,
    ValidationError,
)

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://carnil.dev/problems/"
PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5
# Refused bodies up to this many times server.max_body_bytes are read off the connection.
DRAIN_LIMIT_FACTOR = 8


class Problem(Exception):
    """An error answer: raise it anywhere in a request."""

    def __init__(self, status: int, slug: str, title: str, detail: str,
                 errors: list[FieldError] | None = None, headers: dict[str, str] | None = None,
                 index: int | None = None):
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.errors, self.headers, self.index = errors, headers or {}, index

    def document(self) -> str:
        """The problem document, as JSON text."""
        body = {"type": PROBLEM_TYPE_BASE + self.slug, "title": self.title,
                "status": self.status, "detail": self.detail}
        if self.errors is not None:
            body["errors"] = [e.as_dict() for e in self.errors]
        if self.index is not None:  # the event of a batch that was refused
            body["index"] = self.index
        return json.dumps(body)

    def response(self) -> Response:
        return Response(self.document(), status=self.status, mimetype=PROBLEM_JSON,
                        headers=self.headers)


def invalid(errors: list[FieldError], detail: str = "the request is not valid") -> Problem:
    return Problem(400, "invalid-request", "Invalid request", detail, errors)


def from_domain(error: CarnilError, loc_prefix: tuple = ()) -> Problem:
    """The problem a library error means for a client; ``loc_prefix`` says where the input
    it is about came from (e.g. ``("body",)``)."""
    if isinstance(error, ValidationError):
        located = [FieldError((*loc_prefix, *e.loc), e.msg) for e in error.errors]
        return Problem(400, "invalid-request", "Invalid request", str(error), located,
                       index=error.index)
    if isinstance(error, UsageLimitExceeded):
        return Problem(429, "usage-limit-exceeded", "Usage limit exceeded", str(error),
                       _at(error, loc_prefix), index=error.index)
    if isinstance(error, InsufficientCredits):
        return Problem(402, "insufficient-credits", "Insufficient credits", str(error),
                       _at(error, loc_prefix), index=error.index)
    if isinstance(error, IdempotencyConflict):
        return Problem(422, "idempotency-conflict", "Idempotency key reused", str(error),
                       _at(error, loc_prefix), index=error.index)
    if isinstance(error, StorageUnavailable):
        # The library's message names the driver's error; clients only need to retry.
        return Problem(503, "storage-unavailable", "Storage unavailable",
                       "the store is unavailable; retry later",
                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    log.error("unmapped library error: %r", error)
    return Problem(500, "internal", "Internal error", "the request could not be completed")


def _at(error: CarnilError, loc_prefix: tuple) -> list[FieldError] | None:
    """For an error about one event of a batch: where that event is."""
    if error.index is None:
        return None
    return [FieldError((*loc_prefix, error.index), str(error))]


_HTTP_SLUGS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "method-not-allowed", 413: "payload-too-large",
               415: "unsupported-media-type"}


def install(app: Flask) -> None:
    """Answer every error of ``app`` with a problem document."""

    @app.errorhandler(Problem)
    def _problem(problem: Problem):
        return problem.response()

    @app.errorhandler(CarnilError)
    def _domain(error: CarnilError):
        return from_domain(error).response()

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        slug = _HTTP_SLUGS.get(error.code, "http-error")
        headers = dict(error.get_headers())
        headers.pop("Content-Type", None)
        return Problem(error.code, slug, error.name, error.description or error.name,
                       headers=headers).response()

    @app.after_request
    def _drain_unread_body(response: Response) -> Response:
        # A request refused before its body was read (401, 403, 413, 415...) leaves the body
        # on the socket; gunicorn drains only 64 KiB of it and then drops the kept-alive
        # connection it has just announced. Reading the rest (up to a bound) keeps the
        # connection usable; a body beyond the bound is not worth reading.
        length = request.content_length
        if response.status_code >= 400 and length and \
                length <= DRAIN_LIMIT_FACTOR * app.config["MAX_CONTENT_LENGTH"]:
            stream = request.environ["wsgi.input"]
            with contextlib.suppress(OSError, ValueError):
                while stream.read(64 * 1024):
                    pass
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        log.exception("unexpected error")
        return Problem(500, "internal", "Internal error",
                       "the request could not be completed").response()
