"""Reads of one customer (reports, series, meters), its credits, limits and checks."""

from __future__ import annotations

from pydantic import TypeAdapter

from ..errors import CarnilError
from ..models import UsageLimit
from ..results import (
    AIUsageMetrics,
    CostAnalysis,
    CustomerReport,
    MeterReading,
    UsageCheck,
    UsageMetrics,
    UsageTrend,
)
from . import bodies
from .context import tracker
from .endpoints import ApiBlueprint
from .problems import Problem, from_domain
from .schemas import (
    AIUsageQuery,
    Balance,
    CheckBody,
    CreditBalance,
    CreditGrant,
    LimitBody,
    PeriodQuery,
)

api = ApiBlueprint("customers", __name__)
READ = frozenset({"read"})
CHECK = frozenset({"ingest"})
ADMIN = frozenset()
CUSTOMER = "/v1/customers/{customer_id}"
FEATURE = CUSTOMER + "/features/{feature_id}"

_CREDIT_GRANT = TypeAdapter(CreditGrant)
_LIMIT_BODY = TypeAdapter(LimitBody)
_CHECK_BODY = TypeAdapter(CheckBody)


def _range(query: PeriodQuery) -> dict:
    return {"period": query.period.value, "start": query.start, "end": query.end}


@api.endpoint("GET", CUSTOMER + "/report", "Usage, AI usage, top features and models",
              roles=READ, customer_scoped=True, query=PeriodQuery, response=CustomerReport)
def report(customer_id: str, query: PeriodQuery):
    return tracker().reports.customer_report(customer_id, **_range(query))


@api.endpoint("GET", FEATURE + "/usage", "A feature's usage and cost per bucket",
              roles=READ, customer_scoped=True, query=PeriodQuery, response=list[UsageMetrics])
def usage_metrics(customer_id: str, feature_id: str, query: PeriodQuery):
    return tracker().reports.usage_metrics(customer_id, feature_id, **_range(query))


@api.endpoint("GET", CUSTOMER + "/ai-usage", "Tokens and cost per bucket and model",
              roles=READ, customer_scoped=True, query=AIUsageQuery,
              response=list[AIUsageMetrics])
def customer_ai_usage(customer_id: str, query: AIUsageQuery):
    return tracker().reports.ai_usage_metrics(customer_id, query.model, **_range(query))


@api.endpoint("GET", FEATURE + "/meter", "Current usage, limit, remaining, reset, rate, credits",
              roles=READ, customer_scoped=True, response=MeterReading)
def meter(customer_id: str, feature_id: str):
    return tracker().reports.meter(customer_id, feature_id)


@api.endpoint("GET", FEATURE + "/trends", "Usage per bucket with change and moving average",
              roles=READ, customer_scoped=True, query=PeriodQuery, response=list[UsageTrend])
def trends(customer_id: str, feature_id: str, query: PeriodQuery):
    return tracker().reports.usage_trends(customer_id, feature_id, **_range(query))


@api.endpoint("GET", CUSTOMER + "/cost-analysis", "Costs by feature, model and day",
              roles=READ, customer_scoped=True, query=PeriodQuery, response=CostAnalysis)
def cost_analysis(customer_id: str, query: PeriodQuery):
    return tracker().reports.cost_analysis(customer_id, **_range(query))


@api.endpoint("GET", FEATURE + "/credits", "Credit balance", roles=READ, customer_scoped=True,
              response=CreditBalance, tag="credits")
def credits(customer_id: str, feature_id: str):
    reading = tracker().reports.meter(customer_id, feature_id)
    return CreditBalance(balance=reading.credit_balance, credit_metered=reading.credit_metered)


@api.endpoint("POST", FEATURE + "/credits", "Add credits (a negative amount adjusts down)",
              roles=ADMIN, body=CreditGrant, response=Balance, errors=(400, 415),
              tag="credits")
def add_credits(customer_id: str, feature_id: str):
    grant: CreditGrant = bodies.json_body(_CREDIT_GRANT)
    return Balance(balance=tracker().add_credits(customer_id, feature_id, grant.amount,
                                                 reason=grant.reason))


@api.endpoint("PUT", FEATURE + "/limit", "Set or replace the usage limit", roles=ADMIN,
              body=LimitBody, response=UsageLimit, errors=(400, 415), tag="limits")
def put_limit(customer_id: str, feature_id: str):
    body: LimitBody = bodies.json_body(_LIMIT_BODY)
    t = tracker()
    t.set_usage_limit(customer_id, UsageLimit(feature_id, body.limit, body.period, body.reset_at))
    return t.get_usage_limit(customer_id, feature_id)


@api.endpoint("GET", FEATURE + "/limit", "The usage limit and its next reset", roles=READ,
              customer_scoped=True, response=UsageLimit, errors=(404,), tag="limits")
def get_limit(customer_id: str, feature_id: str):
    limit = tracker().get_usage_limit(customer_id, feature_id)
    if limit is None:
        raise _no_limit(customer_id, feature_id)
    return limit


@api.endpoint("DELETE", FEATURE + "/limit", "Remove the usage limit", roles=ADMIN,
              status=204, errors=(404,), tag="limits")
def delete_limit(customer_id: str, feature_id: str):
    if not tracker().remove_usage_limit(customer_id, feature_id):
        raise _no_limit(customer_id, feature_id)


@api.endpoint("POST", FEATURE + "/check", "May this customer use this much more now?",
              roles=CHECK, customer_scoped=True, body=CheckBody, response=UsageCheck,
              errors=(400, 415))
def check(customer_id: str, feature_id: str):
    body: CheckBody = bodies.json_body(_CHECK_BODY)
    try:
        return tracker().check_usage(customer_id, feature_id, body.required)
    except CarnilError as error:
        raise from_domain(error, ("body",)) from None


def _no_limit(customer_id: str, feature_id: str) -> Problem:
    return Problem(404, "not-found", "Not Found",
                   f"customer {customer_id!r} has no limit on {feature_id!r}")
