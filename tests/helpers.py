"""Shared by the tests: assertions about what the store holds, a writer that keeps the mirror's
points in a list, and the role table of the API."""

from __future__ import annotations

from sqlalchemy import func, select

from carnil_analytics import UsageTracker
from carnil_analytics.store.schema import credit_ledger, events, rollups_hour, totals


def count_rows(tracker: UsageTracker, table) -> int:
    with tracker.db.reading() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def assert_nothing_recorded(tracker: UsageTracker) -> None:
    """No event, rollup, total or ledger entry exists."""
    for table in (events, rollups_hour, totals, credit_ledger):
        assert count_rows(tracker, table) == 0, table.name


class ListWriter:
    """A writer that keeps the lines it is given."""

    def __init__(self):
        self.lines: list[str] = []

    def write(self, lines: list[str]) -> None:
        self.lines.extend(lines)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


def shipped(writer: ListWriter) -> list[float]:
    """The quantities of the points written, in order (each test gives events their own)."""
    return [float(line.split("quantity=")[1].split(" ")[0].split(",")[0])
            for line in writer.lines]


# Which roles may call each API operation besides admin; "customer": for its own customer only.
EXPECTED_ROLES = {
    "events": {"ingest"}, "usage": {"ingest"}, "ai_usage": {"ingest"},
    "report": {"read", "customer"}, "usage_metrics": {"read", "customer"},
    "customer_ai_usage": {"read", "customer"}, "meter": {"read", "customer"},
    "trends": {"read", "customer"}, "cost_analysis": {"read", "customer"},
    "credits": {"read", "customer"}, "get_limit": {"read", "customer"},
    "check": {"ingest", "customer"}, "add_credits": set(), "put_limit": set(),
    "delete_limit": set(), "create_key": set(), "revoke_key": set(),
    "metrics": {"metrics", "read"},
}


def operations(spec: dict):
    """Every (method, path, operation) of an OpenAPI document."""
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def concrete(path: str, customer: str) -> str:
    """An OpenAPI path template with its parameters filled in."""
    return (path.replace("{customer_id}", customer).replace("{feature_id}", "api")
            .replace("{key_id}", "nokey"))
