"""The InfluxDB mirror (SPEC §5) against real servers: ``influxd`` 1.x over the v1 API and
VictoriaMetrics over the v2 API.

Every recorded event becomes exactly one point — also for events of one series at the same
instant, through an outage, a SIGKILL of the service, a point InfluxDB rejects, the one-shot
``influx ship`` and a repeated ``influx backfill`` — and pruning never drops an unshipped event.
Trackers here run on the real clock: VictoriaMetrics drops samples older than its retention.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from sqlalchemy import create_engine, func, select, text

from carnil_analytics import UsageTracker
from carnil_analytics.influx.shipper import Shipper
from carnil_analytics.influx.writers import make_writer
from carnil_analytics.store import outbox
from carnil_analytics.store.schema import events

import influx_servers
from influx_servers import InfluxDB1, Target, VictoriaMetrics, wait_until
from servers import cli_env, run_cli, running_server

# The fixtures: a fresh influxd 1.x (v1 API), and each of influxd and VictoriaMetrics (v2 API).
influxd = influx_servers.influxd
target = influx_servers.target
victoria = influx_servers.victoria

SPECIAL = "a.b:c@d/e+f-g_h"  # every character an id may hold besides letters and digits
ARRIVAL_TIMEOUT = 30.0  # seconds for written points to become readable
WEEK_NS = 7 * 86_400 * 10**9  # the shard group duration of influxd's default autogen policy


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
def mirrored_tracker(database_url):
    """Trackers on the test's store (SQLite or PostgreSQL), on the real clock, mirroring to
    the ``influxdb`` section given; closed at teardown."""
    made: list[UsageTracker] = []

    def make(influxdb: dict, **config) -> UsageTracker:
        made.append(UsageTracker({"database": {"url": database_url()}, "influxdb": influxdb,
                                  **config}))
        return made[-1]

    yield make
    for tracker in made:
        tracker.close()


def shipper_for(tracker: UsageTracker) -> Shipper:
    settings = tracker.settings.influxdb
    return Shipper(tracker.db, settings, make_writer(settings))


def mark_of(tracker: UsageTracker) -> outbox.Mark:
    with tracker.db.reading() as conn:
        return outbox.read_mark(conn)


def last_seq(tracker: UsageTracker) -> int:
    with tracker.db.reading() as conn:
        return conn.execute(select(func.max(events.c.seq))).scalar() or 0


def stored_events(tracker: UsageTracker) -> int:
    with tracker.db.reading() as conn:
        return conn.execute(select(func.count()).select_from(events)).scalar()


def wait_for_count(server: Target, expected: int, measurement: str = "usage",
                   field: str = "quantity", timeout: float = ARRIVAL_TIMEOUT) -> float:
    """Wait until ``expected`` points of ``measurement`` are readable; then the count must be
    exactly that (nothing doubled). Returns the sum of ``field``."""
    seen: list[tuple[int, float]] = []

    def arrived() -> bool:
        seen.append(server.count_and_sum(measurement, field))
        return seen[-1][0] >= expected

    wait_until(arrived, timeout, lambda: f"{server.name}: {seen[-1][0] if seen else 0} of "
               f"{expected} {measurement} points arrived within {timeout} s", interval=0.1)
    if isinstance(server, VictoriaMetrics):
        time.sleep(1.0)  # anything written twice would show up after another flush
        seen.append(server.count_and_sum(measurement, field))
    count, total = seen[-1]
    assert count == expected, f"{server.name}: {count} {measurement} points, expected {expected}"
    return total


def usage_events(count: int, customer: str = "cust", feature: str = "api",
                 at: datetime | None = None, start: int = 1) -> list[dict]:
    """``count`` usage events of quantities start, start+1, ... (whole numbers: exact sums)."""
    return [{"type": "usage", "customer_id": customer, "feature_id": feature,
             "usage": float(start + i), **({"timestamp": at} if at else {})}
            for i in range(count)]


def whole_sum(first: int, last: int) -> int:
    return (first + last) * (last - first + 1) // 2


def mark_in_db(url: str) -> tuple[int, int]:
    """(shipped_seq, highest seq) read straight from a service's store."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            mark = conn.execute(text(
                "SELECT shipped_seq FROM mirror_marks WHERE target = 'influxdb'")).scalar()
            top = conn.execute(text("SELECT max(seq) FROM events")).scalar()
    finally:
        engine.dispose()
    return (mark or 0), (top or 0)


# ------------------------------------------------------------------------------ 1. one instant


def test_events_at_one_instant_all_arrive(target, mirrored_tracker):
    """1,000 events of one customer and feature with one identical timestamp: 1,000 points."""
    tracker = mirrored_tracker(target.client_config())
    at = datetime.now(UTC).replace(microsecond=123_456) - timedelta(minutes=5)
    result = tracker.track_events(usage_events(1000, at=at))
    assert result.accepted == 1000

    assert shipper_for(tracker).ship_all() == 1000

    if isinstance(target, InfluxDB1):
        rows = target.query("SELECT count(quantity), sum(quantity) FROM usage")
        assert [(r["count"], r["sum"]) for r in rows] == [(1000, whole_sum(1, 1000))]
        times = target.times("usage", "quantity")[(("customer", "cust"), ("feature", "api"))]
        assert len(set(times)) == 1000  # distinct instants, each within the event's second
        assert {t // 1_000_000_000 for t in times} == {int(at.timestamp())}
    else:
        assert wait_for_count(target, 1000) == whole_sum(1, 1000)
        samples = target.samples("usage_quantity")
        assert list(samples) == [(("customer", "cust"), ("feature", "api"))]
        assert samples[(("customer", "cust"), ("feature", "api"))] == [
            float(i) for i in range(1, 1001)]
        times = target.times("usage", "quantity")[(("customer", "cust"), ("feature", "api"))]
        assert {t // 1000 for t in times} == {int(at.timestamp())}  # ms, within the second
    mark = mark_of(tracker)
    assert (mark.shipped_seq, mark.points_written, mark.points_rejected) == (1000, 1000, 0)
    assert shipper_for(tracker).ship_all() == 0  # nothing is shipped twice


# ------------------------------------------------------------------------------ 2. point shape


def test_points_have_measurement_tags_and_fields(target, mirrored_tracker):
    tracker = mirrored_tracker(target.client_config())
    at = datetime.now(UTC).replace(microsecond=250_000) - timedelta(minutes=2)
    tracker.track_usage("cust_1", "api_calls", 2.5, cost=0.75, timestamp=at)
    tracker.track_ai_usage("cust_1", "gpt-4", cost=0.0123, input_tokens=1000, output_tokens=500,
                           cached_tokens=200, timestamp=at + timedelta(seconds=1))
    tracker.track_ai_usage("cust_2", "claude", 42, 0.5, timestamp=at)
    assert shipper_for(tracker).ship_all() == 3
    usage_tags = (("customer", "cust_1"), ("feature", "api_calls"))
    gpt_tags = (("customer", "cust_1"), ("model", "gpt-4"))
    claude_tags = (("customer", "cust_2"), ("model", "claude"))
    expected = {
        ("usage", "quantity"): {usage_tags: [2.5]},
        ("usage", "cost"): {usage_tags: [0.75]},
        ("ai_usage", "tokens"): {gpt_tags: [1500], claude_tags: [42]},
        ("ai_usage", "input_tokens"): {gpt_tags: [1000], claude_tags: [0]},
        ("ai_usage", "output_tokens"): {gpt_tags: [500], claude_tags: [0]},
        ("ai_usage", "cached_tokens"): {gpt_tags: [200], claude_tags: [0]},
        ("ai_usage", "cost"): {gpt_tags: [0.0123], claude_tags: [0.5]},
    }
    if isinstance(target, VictoriaMetrics):
        wait_for_count(target, 2, "ai_usage", "tokens")
    for (measurement, field), by_series in expected.items():
        assert target.field_values(measurement, field) == by_series, (measurement, field)

    if isinstance(target, InfluxDB1):
        assert target.tag_keys("usage") == {"customer", "feature"}
        assert target.tag_keys("ai_usage") == {"customer", "model"}
        assert target.field_types("usage") == {"quantity": "float", "cost": "float"}
        assert target.field_types("ai_usage") == {
            "tokens": "integer", "input_tokens": "integer", "output_tokens": "integer",
            "cached_tokens": "integer", "cost": "float"}
        rows = target.query("SELECT * FROM ai_usage WHERE customer = 'cust_1'")
        assert len(rows) == 1
        assert all(isinstance(rows[0][f], int) for f in
                   ("tokens", "input_tokens", "output_tokens", "cached_tokens"))
        # The point's time is the event's, to the second.
        ai_at = at + timedelta(seconds=1)
        assert rows[0]["time"] // 1_000_000_000 == int(ai_at.timestamp())
        usage_time = target.times("usage", "quantity")[usage_tags]
        assert [t // 1_000_000_000 for t in usage_time] == [int(at.timestamp())]
        assert {r["name"] for r in target.query("SHOW MEASUREMENTS")} == {"usage", "ai_usage"}
    else:
        names = {s.labels["__name__"] for s in target.export('{__name__=~".+"}')}
        assert names == {"usage_quantity", "usage_cost", "ai_usage_tokens",
                         "ai_usage_input_tokens", "ai_usage_output_tokens",
                         "ai_usage_cached_tokens", "ai_usage_cost"}
        assert [t // 1000 for t in target.times("usage", "quantity")[usage_tags]] == \
            [int(at.timestamp())]


# ------------------------------------------------------------------------------ 3. special ids


def test_ids_with_every_allowed_special_character_arrive_intact(target, mirrored_tracker):
    tracker = mirrored_tracker(target.client_config())
    tracker.track_usage(SPECIAL, SPECIAL, 3)
    tracker.track_ai_usage(SPECIAL, SPECIAL, 7, 0.25)
    tracker.track_usage(f"x{SPECIAL}", "plain", 1)
    assert shipper_for(tracker).ship_all() == 3
    if isinstance(target, VictoriaMetrics):
        wait_for_count(target, 2, "usage", "quantity")
    assert target.field_values("usage", "quantity") == {
        (("customer", SPECIAL), ("feature", SPECIAL)): [3.0],
        (("customer", f"x{SPECIAL}"), ("feature", "plain")): [1.0]}
    assert target.field_values("ai_usage", "tokens") == {
        (("customer", SPECIAL), ("model", SPECIAL)): [7]}
    if isinstance(target, InfluxDB1):  # and the tag values work as InfluxQL literals
        rows = target.query(f"SELECT sum(quantity) FROM usage WHERE customer = '{SPECIAL}' "
                            f"AND feature = '{SPECIAL}'")
        assert [r["sum"] for r in rows] == [3.0]
        values = {r["value"] for r in target.query('SHOW TAG VALUES FROM usage WITH KEY = '
                                                   '"customer"')}
        assert values == {SPECIAL, f"x{SPECIAL}"}
    else:  # and as PromQL/MetricsQL literals
        series = target.export(f'usage_quantity{{customer="{SPECIAL}"}}')
        assert [(s.labels["feature"], s.values) for s in series] == [(SPECIAL, [3.0])]


# ------------------------------------------------------------------------------ 4. outage


class Tracking:
    """Tracks one usage event after another in a thread, timing each call."""

    def __init__(self, tracker: UsageTracker):
        self.tracker = tracker
        self.calls: list[tuple[float, float]] = []  # (monotonic start, seconds taken)
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="tracking")

    def _run(self) -> None:
        quantity = 0
        while not self.stopping.is_set():
            quantity += 1
            started = time.monotonic()
            try:
                assert self.tracker.track_usage("cust", "api", quantity) is True
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
                return
            self.calls.append((started, time.monotonic() - started))
            time.sleep(0.004)

    def __enter__(self) -> Tracking:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stopping.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "tracking did not stop"

    def max_latency(self, start: float, end: float) -> float:
        return max((took for at, took in self.calls if start <= at <= end), default=0.0)


def test_outage_mid_stream_loses_nothing_and_writes_nothing_twice(target, mirrored_tracker):
    tracker = mirrored_tracker(target.client_config(
        flush_interval_seconds=0.2, max_backoff_seconds=1.0, batch_size=100,
        timeout_seconds=2.0))
    shipper, stop = shipper_for(tracker), threading.Event()
    shipping = threading.Thread(target=shipper.run, args=(stop,), daemon=True)
    shipping.start()
    try:
        with Tracking(tracker) as tracking:
            time.sleep(1.0)
            down = time.monotonic()
            target.stop()
            time.sleep(2.0)
            target.start()
            up = time.monotonic()
            time.sleep(1.0)
        assert not tracking.errors, tracking.errors[0]
        tracked = len(tracking.calls)
        assert tracked > 100
        assert any(down <= at <= up for at, _ in tracking.calls), "nothing tracked in the outage"
        worst = tracking.max_latency(down, up)
        assert worst < 0.5, f"tracking took {worst:.3f} s during the outage"
        final = last_seq(tracker)
        assert final == tracked
        wait_until(lambda: mark_of(tracker).shipped_seq == final, ARRIVAL_TIMEOUT,
                   lambda: f"shipped up to {mark_of(tracker).shipped_seq} of {final}")
    finally:
        stop.set()
        shipping.join(timeout=10)
    mark = mark_of(tracker)
    assert mark.write_errors > 0
    assert mark.points_rejected == 0
    assert wait_for_count(target, tracked) == whole_sum(1, tracked)


# ------------------------------------------------------------------------------ 5. SIGKILL


def test_sigkill_while_shipping_a_backlog_loses_nothing(influxd, tmp_path, database_url):
    total, batch = 20_000, 1000
    config = {"database": {"url": database_url()},
              "influxdb": influxd.client_config(flush_interval_seconds=0.2, batch_size=500,
                                                max_backoff_seconds=1.0, timeout_seconds=2.0)}
    with running_server(tmp_path, config) as server:
        ready = server.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["influxdb"] == "ok"

        influxd.stop()  # the backlog builds up while influxd is away
        ready = server.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"] == {"store": "ok", "influxdb": "unreachable"}
        assert server.get("/healthz").status_code == 200
        for start in range(0, total, batch):
            answer = server.post("/v1/events", json=[
                {"type": "usage", "id": f"ev-{i}", "customer_id": f"cust-{i % 7}",
                 "feature_id": "api", "usage": float(i + 1)}
                for i in range(start, start + batch)])
            assert answer.json() == {"accepted": batch, "duplicates": 0}, answer.text
        assert server.get("/healthz").status_code == 200
        assert mark_in_db(server.database_url) == (0, total)

        influxd.start()
        wait_until(lambda: influxd.count_and_sum()[0] > 0, 20,
                   "the service did not start shipping after influxd came back", interval=0.01)
        server.kill()  # mid-shipping
        shipped, top = mark_in_db(server.database_url)
        count_at_kill = influxd.count_and_sum()[0]
        assert 0 < count_at_kill < total and shipped < top == total, (
            f"not killed mid-shipping: {count_at_kill} points, mark {shipped} of {top}")

        server.start()  # the dead holder's lease expires, then shipping goes on
        ready = server.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["influxdb"] == "ok"
        wait_until(lambda: mark_in_db(server.database_url)[0] == total, 60,
                   lambda: f"shipped up to {mark_in_db(server.database_url)} after the restart")
    count, summed = influxd.count_and_sum()
    assert (count, summed) == (total, whole_sum(1, total))
    per_customer = influxd.query("SELECT count(quantity) FROM usage GROUP BY customer")
    assert sorted(r["count"] for r in per_customer) == sorted(
        len(range(c, total, 7)) for c in range(7))


# ------------------------------------------------------------------------------ 6. rejected


def test_a_rejected_point_does_not_stall_the_rest(influxd, mirrored_tracker, caplog):
    now = datetime.now(UTC)
    old = (now - timedelta(days=20)).replace(microsecond=0)
    old_ns = int(old.timestamp()) * 10**9
    # A string "quantity" in the shard group of ``old``: a float there is a type conflict.
    conflicting_ns = old_ns - 10**9 if (old_ns - 10**9) // WEEK_NS == old_ns // WEEK_NS \
        else old_ns + 10**9
    assert conflicting_ns // WEEK_NS != time.time_ns() // WEEK_NS  # another shard than today's
    answer = influxd.write(f'usage,customer=x,feature=api quantity="text" {conflicting_ns}')
    assert answer.status_code == 204, answer.text

    tracker = mirrored_tracker(influxd.client_config())
    tracker.track_events(usage_events(100, customer="x"))
    assert tracker.track_usage("x", "api", 5000, timestamp=old, event_id="the-bad-one")
    tracker.track_events(usage_events(100, customer="x", start=101))
    with tracker.db.reading() as conn:
        bad_seq = conn.execute(select(events.c.seq)
                               .where(events.c.event_id == "the-bad-one")).scalar()
    assert bad_seq == 101

    caplog.set_level(logging.WARNING, logger="carnil_analytics")
    assert shipper_for(tracker).ship_all() == 201

    mark = mark_of(tracker)
    assert (mark.shipped_seq, mark.points_written, mark.points_rejected) == (201, 200, 1)
    since = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    count, summed = influxd.count_and_sum(where=f"WHERE time >= '{since}'")
    assert (count, summed) == (200, whole_sum(1, 200))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"seq={bad_seq}" in r.getMessage() and "the-bad-one" in r.getMessage()
               for r in errors), [r.getMessage() for r in caplog.records]
    assert shipper_for(tracker).ship_all() == 0  # the mark moved past it: no retry loop


# ------------------------------------------------------------------------------ 7. CLI


def test_cli_ship_and_backfill(influxd, mirrored_tracker, database_url, tmp_path):
    now = datetime.now(UTC)
    tracker = mirrored_tracker(influxd.client_config())
    quantity = 0
    expected: list[tuple[datetime, int]] = []
    for days_ago in range(10):
        for hour in (1, 9, 17):
            at = (now - timedelta(days=days_ago)).replace(hour=hour, minute=30, second=0,
                                                          microsecond=0)
            if at > now:
                continue
            quantity += 1
            tracker.track_usage("cust", "api", quantity, timestamp=at)
            expected.append((at, quantity))
    tracker.close()  # the command line takes over the store

    config_path = tmp_path / "carnil.yaml"
    config = {"database": {"url": database_url()}, "influxdb": influxd.client_config()}
    config_path.write_text(yaml.safe_dump(config))
    assert "CARNIL_CONFIG" not in cli_env()

    shipped = run_cli(config_path, "influx", "ship")
    assert shipped.returncode == 0, shipped.stderr
    assert f"shipped {len(expected)} events" in shipped.stdout
    assert influxd.count_and_sum() == (len(expected), sum(q for _, q in expected))
    again = run_cli(config_path, "influx", "ship")
    assert again.returncode == 0, again.stderr
    assert "shipped 0 events" in again.stdout
    assert influxd.count_and_sum() == (len(expected), sum(q for _, q in expected))
    mark_before = mark_in_db(database_url())

    influxd.create_database("fresh")
    fresh_path = tmp_path / "fresh.yaml"
    fresh_path.write_text(yaml.safe_dump(
        config | {"influxdb": influxd.client_config(database="fresh")}))
    since = (now - timedelta(days=5)).date()
    since_start = datetime(since.year, since.month, since.day, tzinfo=UTC)
    wanted = [q for at, q in expected if at >= since_start]
    assert 0 < len(wanted) < len(expected)
    for _ in range(2):  # twice: InfluxDB overwrites identical points, nothing doubles
        backfilled = run_cli(fresh_path, "influx", "backfill", "--since", since.isoformat())
        assert backfilled.returncode == 0, backfilled.stderr
        assert f"wrote {len(wanted)} events" in backfilled.stdout
        assert influxd.count_and_sum(database="fresh") == (len(wanted), sum(wanted))
    assert mark_in_db(database_url()) == mark_before  # backfill leaves the mark alone
    assert influxd.count_and_sum() == (len(expected), sum(q for _, q in expected))


def test_cli_ship_fails_cleanly_when_influxdb_is_down(influxd, mirrored_tracker, database_url,
                                                      tmp_path):
    tracker = mirrored_tracker(influxd.client_config())
    tracker.track_usage("cust", "api", 1)
    config_path = tmp_path / "carnil.yaml"
    config_path.write_text(yaml.safe_dump({
        "database": {"url": database_url()},
        "influxdb": influxd.client_config(timeout_seconds=2.0)}))
    influxd.stop()
    failed = run_cli(config_path, "influx", "ship")
    assert failed.returncode == 1
    assert "InfluxDB write failed" in failed.stderr
    assert mark_in_db(database_url()) == (0, 1)
    influxd.start()
    shipped = run_cli(config_path, "influx", "ship")
    assert shipped.returncode == 0, shipped.stderr
    assert influxd.count_and_sum() == (1, 1.0)


# ------------------------------------------------------------------------------ 8. pruning


def test_pruning_never_removes_an_unshipped_event(influxd, mirrored_tracker):
    tracker = mirrored_tracker(influxd.client_config(batch_size=20))
    now = datetime.now(UTC)
    tracker.track_events(usage_events(50))
    assert tracker.prune(now + timedelta(days=40)) == 0
    assert stored_events(tracker) == 50

    shipper = shipper_for(tracker)
    assert shipper.ship_batch() == 20  # the first 20 only
    assert tracker.prune(now + timedelta(days=40)) == 20
    assert stored_events(tracker) == 30
    assert mark_of(tracker).shipped_seq == 20

    assert tracker.prune(now + timedelta(days=1)) == 0  # not expired yet
    assert shipper.ship_all() == 30
    assert tracker.prune(now + timedelta(days=40)) == 30
    assert stored_events(tracker) == 0
    assert influxd.count_and_sum() == (50, whole_sum(1, 50))


# ------------------------------------------------------------------------------ extremes


def test_extreme_values_arrive_exactly(target, mirrored_tracker):
    """The largest and smallest accepted quantities, tokens and costs survive line protocol.
    (Each value in a series of its own: VictoriaMetrics compresses the samples of one series
    with a common decimal exponent, which rounds 1e-9 beside 1e15 to 0.)"""
    tracker = mirrored_tracker(target.client_config())
    values = [(1e15, 1e9), (1e-9, 1e-9), (0.0, 0.0), (0.1, 0.3), (123456789.123, 5.5),
              (2.5e-7, 1e-6)]
    for i, (quantity, cost) in enumerate(values):
        tracker.track_usage("cust", f"f{i}", quantity, cost=cost)
    tracker.track_ai_usage("cust", "big", 10**12, 1e9, input_tokens=10**12 - 1, output_tokens=1,
                           cached_tokens=10**12 - 1)
    assert shipper_for(tracker).ship_all() == len(values) + 1
    if isinstance(target, VictoriaMetrics):
        wait_for_count(target, len(values))
    assert target.field_values("usage", "quantity") == {
        (("customer", "cust"), ("feature", f"f{i}")): [quantity]
        for i, (quantity, _) in enumerate(values)}
    assert target.field_values("usage", "cost") == {
        (("customer", "cust"), ("feature", f"f{i}")): [cost] for i, (_, cost) in enumerate(values)}
    ai = (("customer", "cust"), ("model", "big"))
    assert target.field_values("ai_usage", "tokens") == {ai: [10**12]}
    assert target.field_values("ai_usage", "input_tokens") == {ai: [10**12 - 1]}
    assert target.field_values("ai_usage", "output_tokens") == {ai: [1]}
    assert target.field_values("ai_usage", "cached_tokens") == {ai: [10**12 - 1]}
    assert target.field_values("ai_usage", "cost") == {ai: [1e9]}
    assert mark_of(tracker).points_rejected == 0


# ------------------------------------------------------------------------------ far-apart seqs


# Move the events' sequence on, as if 999,999 other events had been recorded.
SKIP_A_MILLION = {
    "sqlite": "UPDATE sqlite_sequence SET seq = 1000000 WHERE name = 'events'",
    "postgresql": "SELECT setval(pg_get_serial_sequence('events', 'seq'), 1000000)",
}


def test_events_of_one_instant_a_million_seqs_apart_stay_two_points(influxd, mirrored_tracker,
                                                                    store):
    tracker = mirrored_tracker(influxd.client_config())
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    tracker.track_usage("cust", "api", 1, timestamp=at)
    # As if 999,999 other events had been recorded since (sequence numbers are never reused):
    # recording them for real takes ~15 s and shipping them far longer.
    with tracker.db.writing() as conn:
        conn.exec_driver_sql(SKIP_A_MILLION[store])
    tracker.track_usage("cust", "api", 2, timestamp=at)  # e.g. a client that rounds timestamps
    assert [row.seq for row in _all_seqs(tracker)] == [1, 1_000_001]
    assert shipper_for(tracker).ship_all() == 2
    assert mark_of(tracker).points_written == 2
    assert influxd.count_and_sum() == (2, 3.0)


def _all_seqs(tracker: UsageTracker) -> list:
    with tracker.db.reading() as conn:
        return conn.execute(select(events.c.seq).order_by(events.c.seq)).all()


def test_a_url_with_a_path_prefix_is_kept(victoria, mirrored_tracker):
    """A URL with a path works: how a VictoriaMetrics cluster's vminsert is addressed
    (``/insert/<tenant>/influx``; a single node serves the same API under ``/influx``)."""
    tracker = mirrored_tracker(victoria.client_config(url=f"{victoria.url}/influx"))
    tracker.track_events(usage_events(10))
    assert shipper_for(tracker).ship_all() == 10
    assert wait_for_count(victoria, 10) == whole_sum(1, 10)
