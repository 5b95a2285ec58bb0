"""The cost of an event, in exact nano-units: an explicit cost wins, else the price list, else 0."""

from __future__ import annotations

from decimal import Decimal

from .config import ModelPrice, PricingSettings
from .models import AIUsageEvent, Event, UsageEvent
from .money import to_nanos

_THOUSAND = Decimal(1000)


class PriceList:
    """Prices the events of one configuration."""

    def __init__(self, pricing: PricingSettings):
        self.currency = pricing.currency
        self._unit_prices = {f: _dec(p.unit_price) for f, p in pricing.features.items()}
        self._token_prices = {m: _TokenPrices(p) for m, p in pricing.models.items()}

    def cost_nanos(self, event: Event) -> int:
        if event.cost is not None:
            return to_nanos(event.cost)
        if isinstance(event, UsageEvent):
            price = self._unit_prices.get(event.feature_id)
            return to_nanos(price * _dec(event.usage)) if price else 0
        prices = self._token_prices.get(event.model_id)
        return to_nanos(prices.cost(event)) if prices else 0


class _TokenPrices:
    """Per-1k prices by token type, with the fallbacks documented in the README.

    Cached tokens are the part of input tokens served from a prompt cache; tokens that are not
    split into input and output are priced at ``per_1k`` (else the input price).
    """

    def __init__(self, price: ModelPrice):
        overall = _dec(price.per_1k)
        self.input = _first(_dec(price.input_per_1k), overall)
        self.output = _first(_dec(price.output_per_1k), overall)
        self.cached = _first(_dec(price.cached_input_per_1k), self.input)
        self.unspecified = _first(overall, self.input)

    def cost(self, event: AIUsageEvent) -> Decimal:
        cached = event.cached_tokens or 0
        per_1k = ((event.input_tokens or 0) - cached) * self.input \
            + cached * self.cached \
            + (event.output_tokens or 0) * self.output \
            + event.unspecified_tokens * self.unspecified
        return per_1k / _THOUSAND


def _dec(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(repr(value))


def _first(*prices: Decimal | None) -> Decimal:
    return next((p for p in prices if p is not None), Decimal(0))
