"""Request and response models of the HTTP API that are not library types."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, model_validator

from ..models import MAX_USAGE, Identifier, Reason
from ..periods import LimitPeriod, ReportPeriod
from ..store.keys import ROLES

Amount = Annotated[float, Strict(), Field(ge=-MAX_USAGE, le=MAX_USAGE, allow_inf_nan=False)]
Required = Annotated[float, Strict(), Field(ge=0, le=MAX_USAGE, allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Query(BaseModel):
    # Query values are strings, so they are parsed leniently ("true", "2026-03-01T00:00:00Z").
    model_config = ConfigDict(extra="forbid")


class PeriodQuery(_Query):
    """A named period, or an explicit range (``start`` and ``end``, RFC 3339)."""

    period: ReportPeriod = ReportPeriod.MONTH
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None

    @model_validator(mode="after")
    def _whole_range(self) -> PeriodQuery:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end, or neither")
        if self.start is not None and self.end <= self.start:
            raise ValueError("end should be after start")
        return self


class AIUsageQuery(PeriodQuery):
    model: Identifier | None = None


class EnforceQuery(_Query):
    enforce: bool = False


class Recorded(BaseModel):
    recorded: bool
    duplicate: bool


class CreditGrant(_Body):
    amount: Amount
    reason: Reason | None = None


class CreditBalance(BaseModel):
    balance: float
    credit_metered: bool


class Balance(BaseModel):
    balance: float


class LimitBody(_Body):
    limit: Required
    period: LimitPeriod
    reset_at: AwareDatetime | None = None


class CheckBody(_Body):
    required: Required


class KeyRequest(_Body):
    role: Literal[ROLES]
    customer_id: Identifier | None = None

    @model_validator(mode="after")
    def _customer_for_customer_keys(self) -> KeyRequest:
        if (self.role == "customer") != (self.customer_id is not None):
            raise ValueError("customer_id is required for customer keys, and only for them")
        return self


class IssuedKey(BaseModel):
    id: str
    key: str  # shown once, never stored
    role: str
    customer_id: str | None


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}
