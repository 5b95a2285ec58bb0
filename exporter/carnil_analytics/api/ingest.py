"""Writing events: batches (JSON array, one object, or NDJSON) and the single-event routes."""

from __future__ import annotations

from flask import current_app, request
from pydantic import TypeAdapter

from ..errors import CarnilError, FieldError
from ..models import AIUsageEvent, Event, UsageEvent
from ..results import BatchResult
from . import bodies
from .context import settings, tracker
from .endpoints import ApiBlueprint
from .problems import Problem, from_domain, invalid
from .schemas import EnforceQuery, Recorded

api = ApiBlueprint("ingest", __name__)
INGEST = frozenset({"ingest"})
WRITE_ERRORS = (400, 402, 413, 415, 422, 429)
EventList = list[UsageEvent | AIUsageEvent]


@api.endpoint("POST", "/v1/events", "Record a batch of events, all or nothing",
              roles=INGEST, query=EnforceQuery, body=UsageEvent | AIUsageEvent | EventList,
              body_media_types=(bodies.JSON, bodies.NDJSON), response=BatchResult,
              errors=WRITE_ERRORS, tag="ingest")
def events(query: EnforceQuery):
    try:
        batch = bodies.events_body(settings().server.max_batch_events)
    except Problem:
        _count_rejected([])
        raise
    try:
        recorded = tracker().record(batch, enforce=query.enforce)
    except CarnilError as error:
        _count_rejected(batch)
        raise from_domain(error, ("body",)) from None
    _count_recorded(batch, recorded.duplicate)
    return BatchResult(accepted=recorded.accepted, duplicates=recorded.duplicates)


@api.endpoint("POST", "/v1/usage", "Record usage of a feature", roles=INGEST,
              query=EnforceQuery, body=UsageEvent, response=Recorded, errors=WRITE_ERRORS,
              tag="ingest")
def usage(query: EnforceQuery):
    return _record_one(_USAGE, query.enforce)


@api.endpoint("POST", "/v1/ai-usage", "Record tokens spent on an AI model", roles=INGEST,
              query=EnforceQuery, body=AIUsageEvent, response=Recorded, errors=WRITE_ERRORS,
              tag="ingest")
def ai_usage(query: EnforceQuery):
    return _record_one(_AI_USAGE, query.enforce)


_USAGE = TypeAdapter(UsageEvent)
_AI_USAGE = TypeAdapter(AIUsageEvent)
IDEMPOTENCY_HEADER = "Idempotency-Key"


def _record_one(adapter: TypeAdapter, enforce: bool) -> Recorded:
    try:
        event: Event = bodies.json_body(adapter)
    except Problem:
        _count_rejected([])
        raise
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None:
        if event.event_id is not None and event.event_id != key:
            raise invalid([FieldError(("header", IDEMPOTENCY_HEADER),
                                      "differs from the body's event_id")])
        event = _with_event_id(adapter, event, key)
    try:
        recorded = tracker().track_event(event, enforce=enforce)
    except CarnilError as error:
        _count_rejected([event])
        raise from_domain(error, ("body",)) from None
    _count_recorded([event], [not recorded])
    return Recorded(recorded=recorded, duplicate=not recorded)


def _count_recorded(batch: list[Event], duplicate: list[bool]) -> None:
    metrics = current_app.extensions["carnil.metrics"]
    for event, replay in zip(batch, duplicate, strict=True):
        metrics.count_event(event.type, "duplicate" if replay else "accepted")


def _count_rejected(batch: list[Event]) -> None:
    """Events of a refused request; when it could not even be read, one "unknown" event."""
    metrics = current_app.extensions["carnil.metrics"]
    if not batch:
        metrics.count_event("unknown", "rejected")
    for event in batch:
        metrics.count_event(event.type, "rejected")


def _with_event_id(adapter: TypeAdapter, event: Event, key: str) -> Event:
    """The event with the header's key as its id, validated like any event id."""
    data = event.model_dump(exclude_none=True) | {"event_id": key}
    try:
        return adapter.validate_python(data)
    except Exception:  # noqa: BLE001 - only the key can be wrong here
        raise invalid([FieldError(("header", IDEMPOTENCY_HEADER),
                                  "should be 1–255 printable ASCII characters")]) from None
