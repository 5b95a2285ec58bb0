"""The InfluxDB mirror: shipping throughput, and ingest latency while the shipper runs.

The servers are the test suite's launchers (tests/influx_servers.py), so the benchmark starts
Debian's ``influxd`` 1.x and ``victoria-metrics`` exactly as the tests do.
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import WriteOptions
from sqlalchemy import update

from carnil_analytics import UsageTracker
from carnil_analytics.influx.points import event_point
from carnil_analytics.influx.shipper import Shipper
from carnil_analytics.influx.writers import make_writer
from carnil_analytics.server import run_shipper
from carnil_analytics.store import outbox
from carnil_analytics.store.schema import mirror_marks

from .harness import Plan, Result, median_of, percentile, say, seconds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from influx_servers import InfluxDB1, VictoriaMetrics  # noqa: E402

BATCH = 5000


def shipping(plan: Plan) -> list[Result]:
    events = plan.pick(100_000, 5_000)
    with tempfile.TemporaryDirectory(prefix="carnil-bench-ship-") as tmp:
        influxd, victoria = InfluxDB1(Path(tmp, "influxd")), VictoriaMetrics(Path(tmp, "vm"))
        influxd.start()
        victoria.start()
        try:
            return [_to_influxd(plan, tmp, influxd, events),
                    _to_victoria(plan, tmp, victoria, events),
                    *_ingest_while_shipping(plan, tmp, influxd)]
        finally:
            influxd.stop()
            victoria.stop()


def _filled_tracker(path: str, influxdb: dict, events: int) -> UsageTracker:
    tracker = UsageTracker({"database": {"url": f"sqlite:///{path}"},
                            "influxdb": {**influxdb, "batch_size": BATCH}})
    now = datetime.now(UTC) - timedelta(minutes=10)
    for start in range(0, events, BATCH):
        tracker.track_events([
            {"type": "usage", "customer_id": f"customer-{i % 50}", "feature_id": f"f{i % 4}",
             "usage": 1.0, "cost": 0.001, "timestamp": now + timedelta(milliseconds=i)}
            if i % 5 else
            {"type": "ai_usage", "customer_id": f"customer-{i % 50}", "model_id": "gpt-4o",
             "input_tokens": 100, "output_tokens": 40, "cost": 0.002,
             "timestamp": now + timedelta(milliseconds=i)}
            for i in range(start, min(events, start + BATCH))])
    return tracker


def _ship_from_zero(tracker: UsageTracker) -> float:
    """Seconds to ship the whole outbox again (the mark rewound; points overwrite)."""
    with tracker.db.writing() as conn:
        conn.execute(update(mirror_marks).values(shipped_xact=0, shipped_seq=0))
    shipper = Shipper(tracker.db, tracker.settings.influxdb, make_writer(tracker.settings.influxdb))
    return seconds(shipper.ship_all)


def _to_influxd(plan: Plan, tmp: str, influxd: InfluxDB1, events: int) -> Result:
    tracker = _filled_tracker(f"{tmp}/v1.db", influxd.client_config(), events)
    ours = median_of(plan.runs, lambda: events / _ship_from_zero(tracker))
    say(f"shipping to influxd (v1): {ours:,.0f} points/s")
    lines = _lines(tracker, events)

    def raw_post() -> None:  # the same points, pre-built, POSTed in batches: the server's cost
        for start in range(0, len(lines), BATCH):
            influxd.write(lines[start:start + BATCH])
    baseline = median_of(plan.runs, lambda: events / seconds(raw_post))
    say(f"shipping to influxd (v1): pre-built lines POSTed {baseline:,.0f} points/s")
    tracker.close()
    return Result("InfluxDB mirror → influxd 1.x (v1 /write)", ours, baseline, "points/s",
                  100_000, higher_is_better=True)


def _to_victoria(plan: Plan, tmp: str, victoria: VictoriaMetrics, events: int) -> Result:
    config = victoria.client_config()
    tracker = _filled_tracker(f"{tmp}/v2.db", config, events)
    ours = median_of(plan.runs, lambda: events / _ship_from_zero(tracker))
    say(f"shipping to VictoriaMetrics (v2): {ours:,.0f} points/s")
    with tracker.db.reading() as conn:
        rows = outbox.pending(conn, outbox.START, events)

    def write_api() -> None:  # influxdb-client's own batching WriteApi, same points
        with InfluxDBClient(url=config["url"], token=config.get("token") or "x",
                            org=config.get("org", "carnil"), enable_gzip=True) as client, \
                client.write_api(write_options=WriteOptions(batch_size=BATCH,
                                                            flush_interval=1_000)) as api:
            api.write(config.get("bucket", "carnil"), config.get("org", "carnil"),
                      [event_point(row) for row in rows], write_precision=WritePrecision.NS)
    baseline = median_of(plan.runs, lambda: events / seconds(write_api))
    say(f"influxdb-client WriteApi → VictoriaMetrics: {baseline:,.0f} points/s")
    tracker.close()
    return Result("InfluxDB mirror → VictoriaMetrics (v2), vs influxdb-client WriteApi", ours,
                  baseline, "points/s", None, higher_is_better=True)


def _lines(tracker: UsageTracker, events: int) -> list[str]:
    with tracker.db.reading() as conn:
        rows = outbox.pending(conn, outbox.START, events)
        return [event_point(row).to_line_protocol() for row in rows]


def _ingest_while_shipping(plan: Plan, tmp: str, influxd: InfluxDB1) -> list[Result]:
    """p99 of single track_usage calls, alone and while the shipper works through a backlog."""
    calls = plan.pick(3000, 200)
    tracker = _filled_tracker(f"{tmp}/latency.db", influxd.client_config(),
                              plan.pick(100_000, 2_000))

    def p99_of_calls() -> float:
        latencies = []
        for i in range(calls):
            started = time.perf_counter()
            tracker.track_usage(f"customer-{i % 50}", "api_calls", 1.0)
            latencies.append((time.perf_counter() - started) * 1000)
        return percentile(latencies, 0.99)

    alone = p99_of_calls()
    with tracker.db.writing() as conn:
        conn.execute(update(mirror_marks).values(shipped_xact=0, shipped_seq=0))
    # As under serve: the shipper in a process of its own.
    shipper = multiprocessing.get_context("spawn").Process(target=run_shipper,
                                                           args=(tracker.settings,))
    shipper.start()
    while_shipping = p99_of_calls()
    shipper.terminate()
    shipper.join(30)
    tracker.close()
    say(f"track_usage p99: alone {alone:.3f} ms, while shipping {while_shipping:.3f} ms")
    return [Result("track_usage p99 while the shipper runs (baseline: alone)", while_shipping,
                   alone, "ms", None, higher_is_better=False)]
