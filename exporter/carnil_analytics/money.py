"""Exact currency amounts: costs are kept as integers of nano-units (1e-9 of a currency unit).

Floats never accumulate money here: a cost enters as a decimal, is rounded once to nano-units,
and every sum is an integer sum. Reading back divides once, which gives the float nearest to
the exact decimal (three costs of 0.1 read back as 0.3).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

NANOS_PER_UNIT = 1_000_000_000
_ONE_NANO = Decimal(1).scaleb(-9)


def to_nanos(amount: float | int | Decimal) -> int:
    """Round an amount of currency to whole nano-units (banker's rounding)."""
    # repr() of a float is its shortest round-tripping decimal, so 0.1 becomes exactly 0.1.
    exact = amount if isinstance(amount, Decimal) else Decimal(repr(amount))
    return int(exact.quantize(_ONE_NANO, rounding=ROUND_HALF_EVEN).scaleb(9))


def from_nanos(nanos: int | Decimal) -> float:
    """The float nearest to an exact amount of nano-units (PostgreSQL sums integers into
    Decimals)."""
    return int(nanos) / NANOS_PER_UNIT
