"""Reading request bodies: content type, size, JSON or NDJSON, validated by pydantic (strict:
``"5"`` and ``true`` are not numbers, NaN and Infinity are refused)."""

from __future__ import annotations

from typing import Annotated, Any

from flask import current_app, request
from pydantic import Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from ..errors import FieldError
from ..models import AIUsageEvent, Event, UsageEvent
from .problems import Problem, invalid

JSON = "application/json"
NDJSON = "application/x-ndjson"

EVENT = TypeAdapter(Annotated[UsageEvent | AIUsageEvent, Field(discriminator="type")])
EVENTS = TypeAdapter(list[Annotated[UsageEvent | AIUsageEvent, Field(discriminator="type")]])
_EVENT_TYPES = {"usage", "ai_usage"}


def raw_body(accepted: tuple[str, ...] = (JSON,)) -> bytes:
    """The body, if its media type is accepted (else 415), not over ``server.max_body_bytes``
    (else 413) and not empty (else 400)."""
    if request.mimetype not in accepted:
        raise Problem(415, "unsupported-media-type", "Unsupported Media Type",
                      f"send the body as {' or '.join(accepted)}")
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None:
        # A chunked body: Werkzeug would silently cut it at the limit (and a cut NDJSON batch
        # still parses), so read one byte past the limit from the server's stream to know.
        data = request.environ["wsgi.input"].read(limit + 1)
        if len(data) > limit:
            raise too_large(f"the body is larger than {limit} bytes (server.max_body_bytes)")
    else:
        data = request.get_data(cache=False)  # Flask answers 413 for a declared excess
    if not data.strip():
        raise invalid([FieldError(("body",), "the body is empty")])
    return data


def parse(adapter: TypeAdapter, data: bytes, loc: tuple = ("body",),
          events: bool = False) -> Any:
    """``data`` parsed as JSON and validated as ``adapter``'s type, or a 400.

    With ``events`` (the adapter validates events of either type), the event type pydantic
    puts in error locations is dropped, and an error about one event of a batch names its
    index.
    """
    try:
        return adapter.validate_json(data, strict=True)
    except PydanticValidationError as exc:
        errors = exc.errors()
        problem = invalid([FieldError((*loc, *(_without_type(e["loc"]) if events else e["loc"])),
                                      e["msg"]) for e in errors])
        first = (*loc, *errors[0]["loc"])[len(loc):]
        if events and first and isinstance(first[0], int):
            problem.index = first[0]
        raise problem from None


def json_body(adapter: TypeAdapter) -> Any:
    return parse(adapter, raw_body())


def events_body(max_events: int) -> list[Event]:
    """One event, a JSON array of events, or NDJSON (one event per line)."""
    data = raw_body((JSON, NDJSON))
    if request.mimetype == NDJSON:
        lines = [line for line in data.split(b"\n") if line.strip()]
        _check_count(len(lines), max_events)
        return [_line_event(index, line) for index, line in enumerate(lines)]
    if data.lstrip()[:1] == b"[":
        events = parse(EVENTS, data, events=True)
        _check_count(len(events), max_events)
        if not events:
            raise invalid([FieldError(("body",), "the batch is empty")])
        return events
    return [parse(EVENT, data, events=True)]


def _line_event(index: int, line: bytes) -> Event:
    try:
        return parse(EVENT, line, ("body", index), events=True)
    except Problem as problem:
        problem.index = index
        raise


def _check_count(count: int, max_events: int) -> None:
    if count > max_events:
        raise too_large(f"the batch has {count} events; at most {max_events} "
                        "(server.max_batch_events) fit in one request")


def too_large(detail: str) -> Problem:
    return Problem(413, "payload-too-large", "Payload Too Large", detail)


def _without_type(loc: tuple) -> tuple:
    """Drop the event type pydantic puts in the location of errors inside a union member."""
    for position, part in enumerate(loc[:2]):
        if part in _EVENT_TYPES and (position == 0 or isinstance(loc[0], int)):
            return (*loc[:position], *loc[position + 1:])
    return loc
