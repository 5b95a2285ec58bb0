"""The exceptions of the library; every one derives from ``CarnilError``."""

from __future__ import annotations

from dataclasses import dataclass


class CarnilError(Exception):
    """Base of every error the library raises on purpose."""

    #: In a batch, the position of the event the error is about.
    index: int | None = None


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field: where it is and what is wrong."""

    loc: tuple[str | int, ...]
    msg: str

    def as_dict(self) -> dict:
        return {"loc": list(self.loc), "msg": self.msg}


class ValidationError(CarnilError, ValueError):
    """Input broke a rule of the contract; nothing was recorded."""

    def __init__(self, errors: list[FieldError] | str):
        if isinstance(errors, str):
            errors = [FieldError((), errors)]
        self.errors = list(errors)
        super().__init__("; ".join(_describe(e) for e in self.errors))

    def at_index(self, index: int) -> ValidationError:
        """The same errors, located at event ``index`` of a batch."""
        located = ValidationError([FieldError((index, *e.loc), e.msg) for e in self.errors])
        located.index = index
        return located


def _describe(error: FieldError) -> str:
    where = ".".join(str(part) for part in error.loc)
    return f"{where}: {error.msg}" if where else error.msg


class ConfigError(CarnilError):
    """The configuration is invalid; the message names the key and the reason."""


class UsageLimitExceeded(CarnilError):
    """An enforced event would take a customer's usage past its limit; nothing was recorded."""

    def __init__(self, customer_id: str, feature_id: str, limit: float, current: float,
                 required: float):
        self.customer_id, self.feature_id = customer_id, feature_id
        self.limit, self.current, self.required = limit, current, required
        super().__init__(
            f"usage limit of {feature_id!r} for customer {customer_id!r} exceeded: "
            f"{current:g} used + {required:g} required > limit {limit:g}")


class InsufficientCredits(CarnilError):
    """An enforced event needs more credits than the balance holds; nothing was recorded."""

    def __init__(self, customer_id: str, feature_id: str, balance: float, required: float):
        self.customer_id, self.feature_id = customer_id, feature_id
        self.balance, self.required = balance, required
        super().__init__(
            f"insufficient credits for {feature_id!r} of customer {customer_id!r}: "
            f"balance {balance:g} < required {required:g}")


class IdempotencyConflict(CarnilError):
    """An event id was reused with a different payload."""

    def __init__(self, customer_id: str, event_id: str):
        self.customer_id, self.event_id = customer_id, event_id
        super().__init__(
            f"event id {event_id!r} of customer {customer_id!r} was already recorded "
            "with a different payload")


class StorageUnavailable(CarnilError):
    """The store cannot be read or written right now; retrying later may succeed."""
