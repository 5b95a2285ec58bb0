"""``GET /metrics`` in process (Flask's test client, a controlled clock): exact values after
scripted usage, the type and labels of every family (SPEC §6), folding into ``__other__`` with
monotonic counters across restarts, rates and exhaustion, ``carnil_up 0``, auth, the scrape
cache, and the self metrics of the HTTP service."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from carnil_analytics import UsageLimit
from carnil_analytics.api import create_app
from carnil_analytics.errors import StorageUnavailable
from carnil_analytics.metrics import scrape as scrape_module
from carnil_analytics.models import to_micros
from carnil_analytics.store.meters import due_for_rollover
from carnil_analytics.store.schema import meters

ADMIN_KEY = "test-admin-key-metrics-0123456789"
OTHER = "__other__"
PRICING = {
    "currency": "EUR",
    "features": {"api": {"unit_price": 0.002}},
    "models": {"gpt-4o": {"input_per_1k": 2.5, "output_per_1k": 10.0,
                          "cached_input_per_1k": 1.25}},
}
# Every family of SPEC §6 (counters without "_total"): its type and label names.
FAMILIES = {
    "carnil_usage": ("counter", {"customer", "feature"}),
    "carnil_usage_cost": ("counter", {"customer", "feature"}),
    "carnil_ai_tokens": ("counter", {"customer", "model", "token_type"}),
    "carnil_ai_cost": ("counter", {"customer", "model"}),
    "carnil_usage_current": ("gauge", {"customer", "feature"}),
    "carnil_usage_limit": ("gauge", {"customer", "feature", "period"}),
    "carnil_usage_remaining": ("gauge", {"customer", "feature"}),
    "carnil_usage_limit_utilization_ratio": ("gauge", {"customer", "feature"}),
    "carnil_usage_limit_reset_timestamp_seconds": ("gauge", {"customer", "feature"}),
    "carnil_usage_limit_exhaustion_seconds": ("gauge", {"customer", "feature"}),
    "carnil_usage_rate_per_minute": ("gauge", {"customer", "feature"}),
    "carnil_credit_balance": ("gauge", {"customer", "feature"}),
    "carnil_events_ingested": ("counter", {"type", "outcome"}),
    "carnil_http_request_duration_seconds": ("histogram", {"route", "method", "status"}),
    "carnil_exporter_scrape_duration_seconds": ("gauge", set()),
    "carnil_exporter_customers_folded": ("gauge", set()),
    "carnil_up": ("gauge", set()),
}
INFLUX_FAMILIES = {
    "carnil_influx_outbox_backlog": ("gauge", set()),
    "carnil_influx_outbox_oldest_age_seconds": ("gauge", set()),
    "carnil_influx_points_written": ("counter", set()),
    "carnil_influx_points_rejected": ("counter", set()),
    "carnil_influx_write_errors": ("counter", set()),
}
SELF_FAMILIES = {"carnil_events_ingested", "carnil_http_request_duration_seconds"}
EXPORTER_FAMILIES = {"carnil_up", "carnil_exporter_scrape_duration_seconds"}


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def auth(key: str | None = ADMIN_KEY) -> dict:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


class Scraped:
    """One answer of ``/metrics``, parsed with prometheus_client's own parser."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in self.families.values():
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in self.samples, f"duplicate series {key}"
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def series(self, name: str) -> dict[frozenset, float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}

    def customers(self) -> set[str]:
        return {dict(labels)["customer"] for (_, labels) in self.samples
                if "customer" in dict(labels)}

    def counters(self) -> dict[tuple[str, frozenset], float]:
        counter_names = {f.name + "_total" for f in self.families.values()
                         if f.type == "counter" and f.name not in SELF_FAMILIES}
        return {key: v for key, v in self.samples.items() if key[0] in counter_names}

    def business(self) -> dict[tuple[str, frozenset], float]:
        """Every sample but the self metrics of the service (which count the scrapes)."""
        return {key: v for key, v in self.samples.items()
                if not any(key[0].startswith(name) for name in SELF_FAMILIES)}


def scrape(client, key: str | None = ADMIN_KEY) -> Scraped:
    answer = client.get("/metrics", headers=auth(key))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.content_type.startswith("text/plain")
    return Scraped(answer.get_data(as_text=True))


@pytest.fixture
def make_app(make_tracker):
    """An app on a tracker of ``config`` (with the admin key, EUR prices and no scrape cache)."""

    def make(config: dict | None = None):
        config = dict(config or {})
        config.setdefault("auth", {"admin_key": ADMIN_KEY})
        config.setdefault("pricing", PRICING)
        config.setdefault("cache", {"ttl": 0})
        tracker = make_tracker(config)
        return tracker, create_app(tracker=tracker).test_client()

    return make


# ------------------------------------------------------------------ values after a sequence

def _scripted_sequence(tracker, clock) -> None:
    """Usage, AI usage (split, unsplit, partly split, explicit cost), limits and credits."""
    clock.now = at(2026, 3, 18, 12, 0)
    tracker.set_usage_limit("acme", UsageLimit("api", 1000, "daily"))
    tracker.update_credit_balance("acme", "api", 5000)
    tracker.set_usage_limit("acme", UsageLimit("ai_cost", 50, "monthly"))
    tracker.track_usage("acme", "api", 100)  # priced: 0.2
    tracker.track_usage("acme", "api", 50, cost=1.5)  # explicit cost wins
    tracker.track_usage("acme", "storage", 3.5)  # no price: cost 0
    # (1200 - 800) * 2.5 + 800 * 1.25 + 300 * 10 per 1k = 5.0
    tracker.track_ai_usage("acme", "gpt-4o", input_tokens=1200, output_tokens=300,
                           cached_tokens=800)
    tracker.track_ai_usage("acme", "gpt-4o", 900, 0.012)  # unsplit, explicit cost
    # 600 input, 300 output, 100 unspecified (priced as input): 1.5 + 3.0 + 0.25 = 4.75
    tracker.track_ai_usage("acme", "gpt-4o", 1000, input_tokens=600, output_tokens=300)
    tracker.track_ai_usage("beta", "claude", 2000, 0.5)
    tracker.set_usage_limit("beta", UsageLimit("api", 500, "monthly"))
    tracker.set_usage_limit("beta", UsageLimit("exports", 10, "daily",
                                               reset_at=at(2026, 3, 18, 15, 0)))
    tracker.track_usage("beta", "api", 120)  # 0.24
    tracker.track_usage("beta", "exports", 4)


def test_exact_values_after_a_scripted_sequence(make_app, clock):
    tracker, client = make_app()
    _scripted_sequence(tracker, clock)
    m = scrape(client)
    approx = pytest.approx

    assert m.value("carnil_up") == 1
    assert m.value("carnil_exporter_customers_folded") == 0
    usage = {("acme", "api"): 150, ("acme", "storage"): 3.5, ("beta", "api"): 120,
             ("beta", "exports"): 4}
    cost = {("acme", "api"): 1.7, ("acme", "storage"): 0, ("beta", "api"): 0.24,
            ("beta", "exports"): 0}
    assert m.series("carnil_usage_total") == {
        frozenset({"customer": c, "feature": f}.items()): v for (c, f), v in usage.items()}
    for (customer, feature), value in cost.items():
        assert m.value("carnil_usage_cost_total", customer=customer, feature=feature) == \
            approx(value, abs=1e-9)
    tokens = {("acme", "gpt-4o"): {"input": 1800, "output": 600, "cached": 800,
                                   "unspecified": 1000},
              ("beta", "claude"): {"input": 0, "output": 0, "cached": 0, "unspecified": 2000}}
    assert m.series("carnil_ai_tokens_total") == {
        frozenset({"customer": c, "model": model, "token_type": t}.items()): v
        for (c, model), split in tokens.items() for t, v in split.items()}
    assert m.value("carnil_ai_cost_total", customer="acme", model="gpt-4o") == \
        approx(9.762, abs=1e-9)
    assert m.value("carnil_ai_cost_total", customer="beta", model="claude") == approx(0.5)

    meters = {  # (customer, feature): current, limit, period, reset
        ("acme", "api"): (150, 1000, "daily", at(2026, 3, 19)),
        ("acme", "ai_cost"): (9.762, 50, "monthly", at(2026, 4, 1)),
        ("beta", "api"): (120, 500, "monthly", at(2026, 4, 1)),
        ("beta", "exports"): (4, 10, "daily", at(2026, 3, 18, 15)),
    }
    assert len(m.series("carnil_usage_current")) == len(meters)
    for (customer, feature), (current, limit, period, reset) in meters.items():
        key = {"customer": customer, "feature": feature}
        assert m.value("carnil_usage_current", **key) == approx(current)
        assert m.value("carnil_usage_limit", **key, period=period) == limit
        assert m.value("carnil_usage_remaining", **key) == approx(limit - current)
        assert m.value("carnil_usage_limit_utilization_ratio", **key) == \
            approx(current / limit)
        assert m.value("carnil_usage_limit_reset_timestamp_seconds", **key) == \
            reset.timestamp()
        # The library's own reading of the meter agrees with the gauges.
        reading = tracker.get_meter(customer, feature)
        assert reading.current == approx(current) and reading.limit == limit
    assert m.series("carnil_credit_balance") == {
        frozenset({"customer": "acme", "feature": "api"}.items()): 4850}
    # Every event is at "now": each active meter's rate is its usage over the 5-minute window.
    assert m.value("carnil_usage_rate_per_minute", customer="acme", feature="api") == 30
    assert m.value("carnil_usage_rate_per_minute", customer="acme", feature="ai_tokens") == \
        approx(3400 / 5)
    assert m.value("carnil_usage_limit_exhaustion_seconds", customer="acme", feature="api") == \
        approx(850 / (30 / 60))


def test_rollover_restarts_the_current_usage_and_advances_the_reset(make_app, clock):
    tracker, client = make_app()
    _scripted_sequence(tracker, clock)
    before = scrape(client)

    clock.now = at(2026, 3, 19, 0, 0, 30)  # past the daily resets, same month
    after = scrape(client)
    api = {"customer": "acme", "feature": "api"}
    assert after.value("carnil_usage_current", **api) == 0
    assert after.value("carnil_usage_remaining", **api) == 1000
    assert after.value("carnil_usage_limit_utilization_ratio", **api) == 0
    assert after.value("carnil_usage_limit_reset_timestamp_seconds", **api) == \
        at(2026, 3, 20).timestamp()
    exports = {"customer": "beta", "feature": "exports"}  # reset_at 15:00: [18th 15h, 19th 15h)
    assert after.value("carnil_usage_current", **exports) == 0
    assert after.value("carnil_usage_limit_reset_timestamp_seconds", **exports) == \
        at(2026, 3, 19, 15).timestamp()
    # Monthly meters and every counter are untouched by a daily reset.
    assert after.value("carnil_usage_current", customer="beta", feature="api") == 120
    assert after.value("carnil_usage_current", customer="acme", feature="ai_cost") == \
        pytest.approx(9.762)
    assert after.counters() == before.counters()
    # Nothing in the rate window any more: no rate, hence no exhaustion forecast.
    assert after.series("carnil_usage_rate_per_minute") == {}
    assert after.series("carnil_usage_limit_exhaustion_seconds") == {}
    # The scrape saved the rollover: no reader recounts the new period again.
    with tracker.db.reading() as conn:
        assert due_for_rollover(conn, to_micros(clock.now)) == []
        stored = conn.execute(select(meters.c.period_start_us, meters.c.period_usage).where(
            meters.c.customer_id == "acme", meters.c.feature_id == "api")).one()
    assert tuple(stored) == (to_micros(at(2026, 3, 19)), 0)

    tracker.track_usage("acme", "api", 10)
    fresh = scrape(client)
    assert fresh.value("carnil_usage_current", **api) == 10
    assert fresh.value("carnil_usage_total", **api) == 160
    assert fresh.value("carnil_credit_balance", **api) == 4840
    assert fresh.value("carnil_usage_rate_per_minute", **api) == 2

    clock.now = at(2026, 4, 1, 0, 0, 30)  # past the monthly resets
    april = scrape(client)
    for customer, feature in (("acme", "ai_cost"), ("beta", "api")):
        key = {"customer": customer, "feature": feature}
        assert april.value("carnil_usage_current", **key) == 0
        assert april.value("carnil_usage_limit_reset_timestamp_seconds", **key) == \
            at(2026, 5, 1).timestamp()
    assert april.counters() == fresh.counters()


def test_every_family_has_its_type_and_label_set(make_app, clock):
    tracker, client = make_app()
    _scripted_sequence(tracker, clock)
    assert client.post("/v1/usage", json={"customer_id": "acme", "feature_id": "api",
                                          "usage": 1}, headers=auth()).status_code == 200
    m = scrape(client)
    # prometheus_client adds a "<name>_created" gauge (creation time) to its own counters and
    # histograms; those companions carry the labels of their family, nothing else.
    created = {name for name in m.families if name.endswith("_created")}
    assert created == {name + "_created" for name in SELF_FAMILIES}
    for name in created:
        base = FAMILIES[name.removesuffix("_created")][1]
        assert all(set(s.labels) == base for s in m.families[name].samples), name
    assert set(m.families) - created == set(FAMILIES), "families differ from SPEC §6"
    for name, (kind, label_names) in FAMILIES.items():
        family = m.families[name]
        assert family.type == kind, name
        assert family.samples, f"{name} has no sample"
        for sample in family.samples:
            extra = {"le"} if sample.name.endswith("_bucket") else set()
            assert set(sample.labels) == label_names | extra, sample
            assert sample.name in {name, name + "_total"} or kind == "histogram", sample.name
    token_types = {s.labels["token_type"] for s in m.families["carnil_ai_tokens"].samples}
    assert token_types == {"input", "output", "cached", "unspecified"}
    periods = {s.labels["period"] for s in m.families["carnil_usage_limit"].samples}
    assert periods == {"daily", "monthly"}


def test_tokens_split_into_input_output_unspecified_sum_to_tokens_tracked(make_app, clock):
    tracker, client = make_app()
    tracked: dict[tuple[str, str], int] = {}
    calls = [("c1", "gpt-4o", {"tokens": 500}),
             ("c1", "gpt-4o", {"input_tokens": 700}),
             ("c1", "gpt-4o", {"output_tokens": 90}),
             ("c1", "gpt-4o", {"input_tokens": 1000, "output_tokens": 200, "cached_tokens": 1000}),
             ("c1", "gpt-4o", {"tokens": 5000, "input_tokens": 10, "output_tokens": 20,
                               "cached_tokens": 5}),
             ("c1", "claude", {"tokens": 33}),
             ("c2", "gpt-4o", {"input_tokens": 12, "output_tokens": 7, "cached_tokens": 3})]
    for customer, model, split in calls:
        tracker.track_ai_usage(customer, model, **split)
        tokens = split.get("tokens", split.get("input_tokens", 0) + split.get("output_tokens", 0))
        tracked[(customer, model)] = tracked.get((customer, model), 0) + tokens
    m = scrape(client)
    summed: dict[tuple[str, str], float] = {}
    for labels, value in m.series("carnil_ai_tokens_total").items():
        labels = dict(labels)
        if labels["token_type"] in ("input", "output", "unspecified"):
            key = (labels["customer"], labels["model"])
            summed[key] = summed.get(key, 0) + value
    assert summed == tracked
    assert m.value("carnil_ai_tokens_total", customer="c1", model="gpt-4o",
                   token_type="cached") == 1005
    # The built-in meter agrees: ai_tokens counts every token tracked.
    assert tracker.get_meter("c1", "ai_tokens").current == sum(
        v for (c, _), v in tracked.items() if c == "c1")


def test_help_texts_name_units_and_the_currency(make_app, clock):
    tracker, client = make_app()
    _scripted_sequence(tracker, clock)
    client.post("/v1/usage", json={"customer_id": "acme", "feature_id": "api", "usage": 1},
                headers=auth())
    m = scrape(client)
    must_mention = {
        "carnil_usage": "units", "carnil_usage_cost": "EUR", "carnil_ai_tokens": "tokens",
        "carnil_ai_cost": "EUR", "carnil_usage_current": "units", "carnil_usage_limit": "units",
        "carnil_usage_remaining": "units", "carnil_usage_limit_utilization_ratio": "limit",
        "carnil_usage_limit_reset_timestamp_seconds": "seconds",
        "carnil_usage_limit_exhaustion_seconds": "seconds",
        "carnil_usage_rate_per_minute": "per minute", "carnil_credit_balance": "EUR",
        "carnil_http_request_duration_seconds": "seconds",
        "carnil_exporter_scrape_duration_seconds": "seconds",
    }
    for name, word in must_mention.items():
        assert word.lower() in m.families[name].documentation.lower(), (name, word)
    for family in m.families.values():
        assert family.documentation.strip(), family.name
        assert "USD" not in family.documentation, family.name  # the configured currency


# ------------------------------------------------------------------ folding into __other__

def _assert_never_lower(seen: dict, m: Scraped) -> None:
    """No counter series seen before is lower now, or gone (a vanished series is a reset)."""
    now = m.counters()
    for key, value in seen.items():
        assert key in now, f"counter series vanished: {key}"
        assert now[key] >= value, f"counter went down: {key} {value} -> {now[key]}"
    seen.update(now)


def _api_total(m: Scraped) -> float:
    return sum(v for labels, v in m.series("carnil_usage_total").items()
               if dict(labels)["feature"] == "api")


def test_folding_is_stable_and_no_counter_ever_decreases(make_app, clock):
    config = {"prometheus": {"max_customers": 2}}
    tracker, client = make_app(config)
    seen: dict = {}
    tracked_api = 0

    def use(customer: str, amount: float) -> None:
        nonlocal tracked_api
        clock.advance(seconds=1)
        tracker.track_usage(customer, "api", amount)
        tracked_api += amount

    def check() -> Scraped:
        m = scrape(client)
        _assert_never_lower(seen, m)
        assert _api_total(m) == tracked_api  # folding loses nothing
        return m

    use("c1", 1)
    use("c2", 2)
    use("c3", 4)
    clock.advance(seconds=1)
    tracker.track_ai_usage("c3", "gpt-4o", 100, 0.1)
    use("c4", 8)
    m = check()
    assert m.customers() == {"c1", "c2", OTHER}
    assert m.value("carnil_usage_total", customer=OTHER, feature="api") == 12
    assert m.value("carnil_ai_tokens_total", customer=OTHER, model="gpt-4o",
                   token_type="unspecified") == 100
    assert m.value("carnil_ai_cost_total", customer=OTHER, model="gpt-4o") == 0.1
    assert m.value("carnil_exporter_customers_folded") == 2

    # A folded customer given a limit gets its own label; what it had stays under __other__.
    clock.advance(seconds=1)
    tracker.set_usage_limit("c3", UsageLimit("api", 100, "daily"))
    m = check()
    assert m.customers() == {"c1", "c2", "c3", OTHER}
    assert m.value("carnil_usage_total", customer="c3", feature="api") == 0
    assert m.value("carnil_ai_tokens_total", customer="c3", model="gpt-4o",
                   token_type="unspecified") == 0
    assert m.value("carnil_usage_total", customer=OTHER, feature="api") == 12
    assert m.value("carnil_ai_cost_total", customer=OTHER, model="gpt-4o") == 0.1
    assert m.value("carnil_usage_current", customer="c3", feature="api") == 4  # the period's
    assert m.value("carnil_exporter_customers_folded") == 1

    use("c3", 5)
    use("c4", 16)
    m = check()
    assert m.value("carnil_usage_total", customer="c3", feature="api") == 5
    assert m.value("carnil_usage_current", customer="c3", feature="api") == 9
    assert m.value("carnil_usage_total", customer=OTHER, feature="api") == 28

    # Credits label a customer too.
    clock.advance(seconds=1)
    tracker.update_credit_balance("c4", "api", 100)
    m = check()
    assert m.value("carnil_usage_total", customer="c4", feature="api") == 0
    assert m.value("carnil_exporter_customers_folded") == 0

    use("c5", 32)  # a new customer beyond max_customers is folded
    use("c4", 1)
    m = check()
    assert m.customers() == {"c1", "c2", "c3", "c4", OTHER}
    assert m.value("carnil_usage_total", customer=OTHER, feature="api") == 60
    assert m.value("carnil_usage_total", customer="c4", feature="api") == 1
    assert m.value("carnil_credit_balance", customer="c4", feature="api") == 99
    assert m.value("carnil_exporter_customers_folded") == 1
    before_restart = m

    # A restart: the same membership and the same values from the store alone.
    tracker.close()
    tracker, client = make_app(config)
    m = check()
    assert m.customers() == before_restart.customers()
    assert m.business().keys() == before_restart.business().keys()
    assert m.counters() == before_restart.counters()

    use("c6", 64)
    use("c1", 1)
    use("c5", 1)
    m = check()
    assert m.customers() == {"c1", "c2", "c3", "c4", OTHER}
    assert m.value("carnil_usage_total", customer="c1", feature="api") == 2
    assert m.value("carnil_usage_total", customer=OTHER, feature="api") == 125
    assert m.value("carnil_exporter_customers_folded") == 2


@pytest.mark.parametrize("alpha_offset", [1, -1], ids=["same-instant-as-mid",
                                                       "clock-stepped-back"])
def test_an_early_clock_reading_never_takes_a_label_away(make_app, clock, alpha_offset):
    tracker, client = make_app({"prometheus": {"max_customers": 2}})
    start = clock.now
    tracker.track_usage("zed", "api", 1)  # recorded at start
    clock.now = start + timedelta(seconds=1)
    tracker.track_usage("mid", "api", 1)  # recorded at start + 1 s
    assert scrape(client).customers() == {"zed", "mid"}
    # The third customer's first event commits last, but its clock reads start + 1 s (as mid:
    # ties go by name) or start - 1 s (NTP step, or a replica whose clock is behind).
    clock.now = start + timedelta(seconds=alpha_offset)
    tracker.track_usage("alpha", "api", 1)  # a third customer: must be folded
    m = scrape(client)
    assert m.customers() == {"zed", "mid", OTHER}
    assert m.value("carnil_usage_total", customer="zed", feature="api") == 1
    assert m.value("carnil_usage_total", customer="mid", feature="api") == 1


def test_a_customer_with_a_limit_keeps_its_label_when_max_customers_is_lowered(make_app,
                                                                              clock):
    tracker, client = make_app({"prometheus": {"max_customers": 3}})
    for customer in ("c1", "c2", "c3", "c4"):
        clock.advance(seconds=1)
        tracker.track_usage(customer, "api", 1)
    tracker.set_usage_limit("c3", UsageLimit("api", 100, "daily"))
    assert scrape(client).customers() == {"c1", "c2", "c3", OTHER}
    tracker.close()

    tracker, client = make_app({"prometheus": {"max_customers": 1}})
    m = scrape(client)
    assert m.value("carnil_usage_limit", customer="c3", feature="api", period="daily") == 100
    assert m.value("carnil_usage_total", customer="c3", feature="api") == 1


def test_identifiers_with_every_allowed_character_are_label_values_as_is(make_app):
    tracker, client = make_app()
    customer, feature, model = "Org.1:team@eu/a+b-c_d", "v2/api:calls+x", "vendor/model:7b@q4"
    tracker.update_credit_balance(customer, feature, 5)
    tracker.track_usage(customer, feature, 2)
    tracker.track_ai_usage(customer, model, 10, 0.5)
    m = scrape(client)
    assert m.value("carnil_usage_total", customer=customer, feature=feature) == 2
    assert m.value("carnil_ai_cost_total", customer=customer, model=model) == 0.5
    assert m.value("carnil_credit_balance", customer=customer, feature=feature) == 3


# ------------------------------------------------------------------ rate and exhaustion

@pytest.mark.parametrize("window_minutes", [2, 10])
def test_the_rate_window_is_configurable(make_app, clock, window_minutes):
    tracker, client = make_app({"real_time": {"rate_window_seconds": window_minutes * 60}})
    clock.now = at(2026, 3, 18, 12, 0)
    for minutes_ago, amount in ((1, 40), (3, 300), (9, 5000), (11, 70000)):
        tracker.track_usage("acme", "api", amount,
                            timestamp=clock.now - timedelta(minutes=minutes_ago))
    inside = sum(a for ago, a in ((1, 40), (3, 300), (9, 5000), (11, 70000))
                 if ago <= window_minutes)
    assert scrape(client).value("carnil_usage_rate_per_minute", customer="acme",
                                feature="api") == inside / window_minutes


def test_events_dated_ahead_join_the_rate_when_their_minute_comes(make_app, clock):
    tracker, client = make_app()
    clock.now = at(2026, 3, 18, 12, 0, 30)
    tracker.track_usage("acme", "api", 50, timestamp=at(2026, 3, 18, 11, 59))
    tracker.track_usage("acme", "api", 800, timestamp=at(2026, 3, 18, 12, 3))  # clock skew
    key = {"customer": "acme", "feature": "api"}
    assert scrape(client).value("carnil_usage_rate_per_minute", **key) == 50 / 5
    assert tracker.get_meter("acme", "api").rate_per_minute == 50 / 5
    clock.now = at(2026, 3, 18, 12, 3, 30)
    assert scrape(client).value("carnil_usage_rate_per_minute", **key) == 850 / 5


def test_rate_and_exhaustion_gauges(make_app, clock):
    tracker, client = make_app()
    clock.now = at(2026, 3, 18, 12, 0)  # the window is [11:55, 12:00]
    tracker.set_usage_limit("acme", UsageLimit("api", 1000, "daily"))
    for ts, amount in ((at(2026, 3, 18, 11, 54, 30), 500),  # before the window
                       (at(2026, 3, 18, 11, 55, 10), 30),
                       (at(2026, 3, 18, 11, 57, 45), 60),
                       (at(2026, 3, 18, 11, 59, 59), 60)):
        tracker.track_usage("acme", "api", amount, timestamp=ts)
    tracker.track_usage("quiet", "api", 7, timestamp=at(2026, 3, 18, 11, 50))
    key = {"customer": "acme", "feature": "api"}
    m = scrape(client)
    rate = m.value("carnil_usage_rate_per_minute", **key)
    assert rate == (30 + 60 + 60) / 5
    assert rate == pytest.approx(tracker.get_meter("acme", "api").rate_per_minute)
    remaining = 1000 - 650
    assert m.value("carnil_usage_remaining", **key) == remaining
    assert m.value("carnil_usage_limit_exhaustion_seconds", **key) == \
        pytest.approx(remaining / (rate / 60))
    assert m.value("carnil_usage_rate_per_minute", customer="quiet", feature="api") in (None, 0)

    # Over the limit with a positive rate: exhausted now, 0 seconds (never negative).
    tracker.track_usage("acme", "api", 400, timestamp=at(2026, 3, 18, 11, 59, 59))
    m = scrape(client)
    assert m.value("carnil_usage_remaining", **key) == -50
    assert m.value("carnil_usage_rate_per_minute", **key) == 110
    assert m.value("carnil_usage_limit_exhaustion_seconds", **key) == 0

    # Ten minutes later nothing is in the window: the forecast is absent, not infinite.
    clock.advance(minutes=10)
    m = scrape(client)
    assert m.value("carnil_usage_rate_per_minute", **key) in (None, 0)
    assert m.value("carnil_usage_limit_exhaustion_seconds", **key) is None
    assert m.value("carnil_usage_remaining", **key) == -50


# ------------------------------------------------------------------ the store cannot be read

def _break_by_dropping_totals(tracker, _monkeypatch):
    """Really break the store: the table the counters are read from is gone."""
    with tracker.db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE totals RENAME TO totals_away")

    def repair():
        with tracker.db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE totals_away RENAME TO totals")
    return repair


def _break_by_failing_reads(tracker, monkeypatch):
    """The store's read transactions fail as they do when the database is unavailable."""
    def reading():
        raise StorageUnavailable("the store is unavailable: disk I/O error")
    monkeypatch.setattr(tracker.db, "reading", reading)
    return lambda: monkeypatch.undo()


@pytest.mark.parametrize("break_store", [_break_by_dropping_totals, _break_by_failing_reads],
                         ids=["table-missing", "reads-fail"])
def test_an_unreadable_store_answers_up_0_with_the_self_metrics(make_app, clock, monkeypatch,
                                                                 break_store, caplog):
    tracker, client = make_app()
    tracker.set_usage_limit("acme", UsageLimit("api", 10, "daily"))
    assert client.post("/v1/usage", json={"customer_id": "acme", "feature_id": "api",
                                          "usage": 1}, headers=auth()).status_code == 200
    assert scrape(client).value("carnil_up") == 1

    repair = break_store(tracker, monkeypatch)
    m = scrape(client)
    assert m.value("carnil_up") == 0
    assert m.value("carnil_exporter_scrape_duration_seconds") >= 0
    assert m.value("carnil_events_ingested_total", type="usage", outcome="accepted") == 1
    assert "carnil_http_request_duration_seconds" in m.families
    families = {name for name in m.families if not name.endswith("_created")}
    assert families == EXPORTER_FAMILIES | SELF_FAMILIES  # no stale business values
    assert "cannot read the store" in caplog.text

    repair()
    m = scrape(client)
    assert m.value("carnil_up") == 1
    assert m.value("carnil_usage_total", customer="acme", feature="api") == 1


# ------------------------------------------------------------------ who may scrape

@pytest.mark.parametrize("role, status", [(None, 401), ("bogus", 401), ("ingest", 403),
                                          ("customer", 403), ("metrics", 200), ("read", 200),
                                          ("admin", 200)])
def test_who_may_scrape(make_app, role, status):
    tracker, client = make_app()
    key = {None: None, "bogus": "carnil_0000_nope", "admin": ADMIN_KEY}.get(role)
    if key is None and role not in (None, "bogus"):
        body = {"role": role} | ({"customer_id": "acme"} if role == "customer" else {})
        answer = client.post("/v1/keys", json=body, headers=auth())
        assert answer.status_code == 201
        key = answer.json["key"]
    answer = client.get("/metrics", headers=auth(key))
    assert answer.status_code == status, answer.get_data(as_text=True)
    if status == 200:
        assert Scraped(answer.get_data(as_text=True)).value("carnil_up") == 1
    else:
        assert answer.mimetype == "application/problem+json"
        assert b"carnil_" not in answer.data


def test_public_metrics_need_no_key(make_app):
    _, client = make_app({"prometheus": {"public": True}})
    assert scrape(client, key=None).value("carnil_up") == 1


# ------------------------------------------------------------------ the scrape cache

class FakeMonotonic:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_scrapes_within_the_ttl_share_one_read_of_the_store(make_app, monkeypatch):
    tracker, client = make_app({"cache": {"enabled": True, "ttl": 5}})
    monotonic = FakeMonotonic()
    monkeypatch.setattr(scrape_module, "time", types.SimpleNamespace(monotonic=monotonic))
    tracker.track_usage("acme", "api", 1)
    key = {"customer": "acme", "feature": "api"}
    first = scrape(client)
    assert first.value("carnil_usage_total", **key) == 1

    tracker.track_usage("acme", "api", 2)
    monotonic.now += 4.9
    second = scrape(client)
    assert second.business() == first.business()  # scrape duration included: the same read
    # ... while the service's own metrics are live.
    assert second.value("carnil_http_request_duration_seconds_count", route="/metrics",
                        method="GET", status="200") == 1

    monotonic.now += 0.2  # past the ttl
    third = scrape(client)
    assert third.value("carnil_usage_total", **key) == 3


@pytest.mark.parametrize("cache", [{"enabled": True, "ttl": 0}, {"enabled": False, "ttl": 60}])
def test_without_a_cache_every_scrape_reads_the_store(make_app, cache):
    tracker, client = make_app({"cache": cache})
    tracker.track_usage("acme", "api", 1)
    assert scrape(client).value("carnil_usage_total", customer="acme", feature="api") == 1
    tracker.track_usage("acme", "api", 2)
    assert scrape(client).value("carnil_usage_total", customer="acme", feature="api") == 3


# ------------------------------------------------------------------ self metrics

def test_events_ingested_by_type_and_outcome(make_app, clock):
    tracker, client = make_app()
    tracker.set_usage_limit("acme", UsageLimit("api", 10, "daily"))

    def post(path: str, body, status: int = 200, **headers):
        kwargs = {"json": body} if not isinstance(body, bytes) else {
            "data": body, "content_type": "application/json"}
        answer = client.post(path, headers=auth() | headers, **kwargs)
        assert answer.status_code == status, answer.get_data(as_text=True)

    usage = {"customer_id": "acme", "feature_id": "api", "usage": 1}
    ai = {"customer_id": "acme", "model_id": "gpt-4o", "tokens": 10}
    post("/v1/usage", usage)  # usage accepted 1
    post("/v1/usage", usage, **{"Idempotency-Key": "k-1"})  # usage accepted 2
    post("/v1/usage", usage, **{"Idempotency-Key": "k-1"})  # usage duplicate 1
    post("/v1/ai-usage", ai)  # ai accepted 1
    batch = [{"type": "usage", "id": "b-1", **usage}, {"type": "ai_usage", "id": "b-2", **ai},
             {"type": "ai_usage", **ai}]
    post("/v1/events", batch)  # usage accepted 3, ai accepted 3
    post("/v1/events", batch[:2])  # usage duplicate 2, ai duplicate 1
    post("/v1/usage?enforce=true", usage | {"usage": 100}, status=429)  # usage rejected 1
    post("/v1/events", [{"type": "usage", "id": "b-1", **usage, "usage": 2}],
         status=422)  # same id, other payload: usage rejected 2
    post("/v1/ai-usage", ai | {"tokens": -1}, status=400)  # unreadable: unknown rejected 1
    post("/v1/events", b"{not json", status=400)  # unknown rejected 2

    m = scrape(client)
    assert m.series("carnil_events_ingested_total") == {
        frozenset({"type": t, "outcome": o}.items()): v for (t, o), v in {
            ("usage", "accepted"): 3, ("usage", "duplicate"): 2, ("usage", "rejected"): 2,
            ("ai_usage", "accepted"): 3, ("ai_usage", "duplicate"): 1,
            ("unknown", "rejected"): 2}.items()}
    # What was accepted is what the store holds.
    assert m.value("carnil_usage_total", customer="acme", feature="api") == 3
    assert m.value("carnil_ai_tokens_total", customer="acme", model="gpt-4o",
                   token_type="unspecified") == 30


def test_request_durations_are_labelled_by_route_template(make_app):
    tracker, client = make_app()
    tracker.track_usage("acme", "api", 1)
    for customer in ("acme", "beta", "gamma"):
        answer = client.get(f"/v1/customers/{customer}/features/api/meter", headers=auth())
        assert answer.status_code == 200
    assert client.get("/v1/customers/acme/features/api/meter").status_code == 401
    assert client.get("/no/such/route/acme", headers=auth()).status_code == 404
    m = scrape(client)
    template = "/v1/customers/{customer_id}/features/{feature_id}/meter"
    count = "carnil_http_request_duration_seconds_count"
    assert m.value(count, route=template, method="GET", status="200") == 3
    assert m.value(count, route=template, method="GET", status="401") == 1
    assert m.value("carnil_http_request_duration_seconds_bucket", route=template,
                   method="GET", status="200", le="+Inf") == 3
    assert m.value("carnil_http_request_duration_seconds_sum", route=template, method="GET",
                   status="200") > 0
    routes = {dict(labels)["route"] for labels in m.series(count)}
    assert not any(c in route for route in routes for c in ("acme", "beta", "gamma")), routes


def test_the_mirror_families_when_influxdb_is_enabled(make_app, clock):
    tracker, client = make_app({"influxdb": {"enabled": True, "url": "http://127.0.0.1:9",
                                             "token": "t"}})
    tracker.track_usage("acme", "api", 1)
    clock.advance(seconds=30)
    tracker.track_ai_usage("acme", "gpt-4o", 10, 0.01)
    m = scrape(client)
    for name, (kind, label_names) in INFLUX_FAMILIES.items():
        assert m.families[name].type == kind, name
        assert all(set(s.labels) == label_names for s in m.families[name].samples)
    assert m.value("carnil_influx_outbox_backlog") == 2  # nothing shipped in process
    assert m.value("carnil_influx_outbox_oldest_age_seconds") == 30
    assert m.value("carnil_influx_points_written_total") == 0
    assert m.value("carnil_influx_points_rejected_total") == 0
    assert m.value("carnil_influx_write_errors_total") == 0
