"""Domain types and the validation rules of what enters the store: ids, quantities, events, limits.

The same models validate library calls and (later) HTTP bodies, so the rules live here once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from .errors import FieldError, ValidationError
from .periods import LimitPeriod

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$"
EVENT_ID_PATTERN = r"^[\x21-\x7e]{1,255}$"  # printable ASCII, no spaces: UUIDs, ULIDs, hashes
MAX_USAGE = 1e15
MAX_TOKENS = 10**12
MAX_COST = 1e9
MAX_METADATA_ENTRIES = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 256
MAX_REASON = 256

# Every AI event also feeds these two meters of its customer (quantity = tokens, and = cost).
AI_TOKENS_METER = "ai_tokens"
AI_COST_METER = "ai_cost"
AI_METERS = frozenset({AI_TOKENS_METER, AI_COST_METER})

Identifier = Annotated[str, Strict(), StringConstraints(pattern=ID_PATTERN)]
EventId = Annotated[str, Strict(), StringConstraints(pattern=EVENT_ID_PATTERN)]
# Free text kept in the store (a credit grant's reason): no control characters but tab and
# line breaks — PostgreSQL cannot store NUL in text, and nothing else should need them.
Reason = Annotated[str, Strict(), StringConstraints(
    max_length=MAX_REASON, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")]
Usage = Annotated[float, Strict(), Field(ge=0, le=MAX_USAGE, allow_inf_nan=False)]
Tokens = Annotated[int, Strict(), Field(ge=0, le=MAX_TOKENS)]
Cost = Annotated[float, Strict(), Field(ge=0, le=MAX_COST, allow_inf_nan=False)]
Metadata = dict[
    Annotated[str, Strict(), StringConstraints(min_length=1, max_length=MAX_METADATA_KEY)],
    Annotated[str, Strict(), StringConstraints(max_length=MAX_METADATA_VALUE)],
]


class _Event(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    customer_id: Identifier
    cost: Cost | None = None
    timestamp: AwareDatetime | None = None
    # Batches over HTTP name it "id"; both spellings mean the idempotency key.
    event_id: Annotated[EventId | None, Field(validation_alias=AliasChoices("event_id", "id"))] \
        = None
    metadata: Annotated[Metadata, Field(max_length=MAX_METADATA_ENTRIES)] | None = None


class UsageEvent(_Event):
    """Usage of a feature by a customer (API calls, messages, seats...)."""

    type: Literal["usage"] = "usage"
    feature_id: Identifier
    usage: Usage

    @model_validator(mode="after")
    def _not_a_builtin_meter(self) -> UsageEvent:
        if self.feature_id in AI_METERS:
            raise ValueError(f"{self.feature_id!r} is a built-in AI meter; track AI usage instead")
        return self

    @property
    def subject(self) -> str:
        return self.feature_id


class AIUsageEvent(_Event):
    """Tokens a customer spent on an AI model.

    ``tokens`` may be omitted when ``input_tokens``/``output_tokens`` are given (then it is their
    sum). ``cached_tokens`` are the part of ``input_tokens`` served from a prompt cache.
    """

    type: Literal["ai_usage"] = "ai_usage"
    model_id: Identifier
    tokens: Tokens | None = None
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cached_tokens: Tokens | None = None

    @model_validator(mode="after")
    def _consistent_tokens(self) -> AIUsageEvent:
        split = (self.input_tokens or 0) + (self.output_tokens or 0)
        if self.tokens is None:
            if self.input_tokens is None and self.output_tokens is None:
                raise ValueError("give tokens, or input_tokens and/or output_tokens")
            object.__setattr__(self, "tokens", split)
        elif split > self.tokens:
            raise ValueError("input_tokens + output_tokens exceed tokens")
        if (self.cached_tokens or 0) > (self.input_tokens or 0):
            raise ValueError("cached_tokens are part of input_tokens and cannot exceed them")
        return self

    @property
    def subject(self) -> str:
        return self.model_id

    @property
    def unspecified_tokens(self) -> int:
        """Tokens not split into input or output."""
        return self.tokens - (self.input_tokens or 0) - (self.output_tokens or 0)


Event = UsageEvent | AIUsageEvent


def parse(model: type[BaseModel], data: dict) -> BaseModel:
    """Validate ``data`` as ``model``, turning pydantic's errors into our ``ValidationError``."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(
            [FieldError(tuple(e["loc"]), e["msg"]) for e in exc.errors()]) from None


@pydantic_dataclass(frozen=True)
class UsageLimit:
    """A cap on a meter's usage per period.

    Without ``reset_at`` the period is the UTC calendar day, ISO week or month. With it, the
    current period is ``[reset_at − period, reset_at)`` and it rolls over by whole periods.
    """

    feature_id: Identifier
    limit: Annotated[float, Strict(), Field(ge=0, le=MAX_USAGE, allow_inf_nan=False)]
    period: LimitPeriod
    reset_at: AwareDatetime | None = None


_IDENTIFIER = TypeAdapter(Identifier)
_REASON = TypeAdapter(Reason)
# Credit adjustments may be negative; they share the magnitude bound of usage.
_AMOUNT = TypeAdapter(
    Annotated[float, Strict(), Field(ge=-MAX_USAGE, le=MAX_USAGE, allow_inf_nan=False)])


def _check(adapter: TypeAdapter, value: object, field: str):
    try:
        return adapter.validate_python(value)
    except PydanticValidationError as exc:
        raise ValidationError([FieldError((field,), exc.errors()[0]["msg"])]) from None


def validate_identifier(value: object, field: str) -> str:
    """``value`` if it is a valid customer/feature/model id, else a ``ValidationError``."""
    return _check(_IDENTIFIER, value, field)


def validate_reason(value: object, field: str) -> str:
    """``value`` if it is a valid reason text, else a ``ValidationError``."""
    return _check(_REASON, value, field)


def validate_amount(value: object, field: str) -> float:
    """A finite number within ±1e15 (not a bool, not a string), else a ``ValidationError``."""
    return _check(_AMOUNT, value, field)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly."""
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime of microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=micros)
