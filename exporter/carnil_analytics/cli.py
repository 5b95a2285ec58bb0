"""The ``carnil-analytics`` command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import yaml
from pydantic import ValidationError as PydanticValidationError

from .config import Settings, use_multiprocess_metrics
from .errors import CarnilError, ConfigError
from .store.keys import ROLES

if TYPE_CHECKING:
    from .influx.shipper import Shipper


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="carnil-analytics",
        description="Usage metering and AI-cost observability.")
    parser.add_argument("--config", help="YAML configuration file (default: $CARNIL_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="fill the store with 30 days of synthetic traffic")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    serve = commands.add_parser("serve", help="run the HTTP service (gunicorn)")
    serve.add_argument("--host", help="address to listen on (server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (server.port)")
    serve.set_defaults(run=_serve)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--customer", help="the customer a 'customer' key may see")
    create.set_defaults(run=_create_key)

    influx = commands.add_parser("influx", help="the InfluxDB mirror")
    influx_commands = influx.add_subparsers(dest="influx_command", required=True)
    ship = influx_commands.add_parser("ship", help="ship every unshipped event now, then exit")
    ship.set_defaults(run=_influx_ship)
    backfill = influx_commands.add_parser(
        "backfill", help="write every retained event since DATE again (e.g. into a new InfluxDB)")
    backfill.add_argument("--since", required=True, type=_aware_date,
                          help="RFC 3339 time or YYYY-MM-DD (UTC)")
    backfill.set_defaults(run=_influx_backfill)

    store = commands.add_parser("store", help="the SQL store")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    copy = store_commands.add_parser(
        "copy", help="copy every row of the store into an empty one (e.g. SQLite → PostgreSQL)")
    copy.add_argument("--to", required=True, metavar="URL",
                      help="the target's SQLAlchemy URL, e.g. postgresql+psycopg://…/carnil")
    copy.set_defaults(run=_store_copy)

    check = commands.add_parser(
        "check-config", help="validate the configuration and print it, secrets masked")
    check.set_defaults(run=_check_config)

    args = parser.parse_args(argv)
    try:
        return args.run(Settings.load(args.config), args)
    except CarnilError as exc:
        print(f"carnil-analytics: {exc}", file=sys.stderr)
        return 2


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from .analytics import UsageAnalyticsEngine
    from .demo import CUSTOMERS, fill
    from .tracker import UsageTracker

    with UsageTracker(settings) as tracker:
        count = fill(tracker, datetime.now(UTC), seed=args.seed, progress=not args.no_progress)
        engine = UsageAnalyticsEngine(tracker)
        print(f"recorded {count} events for {len(CUSTOMERS)} customers "
              f"in {settings.database.url.get_secret_value()}")
        for customer in CUSTOMERS:
            summary = engine.generate_customer_report(customer, "month").summary
            print(f"  {customer:10} usage {summary.total_usage:>12,.0f}   "
                  f"cost {summary.total_cost:>10,.2f} {settings.pricing.currency}")
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    # Workers share their self metrics through files; a fresh directory per run, so
    # counters start again at zero like any process's would.
    use_multiprocess_metrics(tempfile.mkdtemp(prefix="carnil-metrics-"))
    from .server import serve

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = Settings.from_mapping(
            settings.model_dump() | {"server": settings.server.model_dump() | overrides})
    serve(settings)
    return 0


def _create_key(settings: Settings, args: argparse.Namespace) -> int:
    from .api.auth import KeyRing
    from .api.schemas import KeyRequest
    from .tracker import UsageTracker

    try:
        request = KeyRequest(role=args.role, customer_id=args.customer)
    except PydanticValidationError as exc:
        print(f"carnil-analytics: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    with UsageTracker(settings) as tracker:
        issued = KeyRing(tracker.db, settings).create(request.role, request.customer_id)
    print(issued.key)
    print(f"id {issued.principal.key_id}, role {issued.principal.role}"
          + (f", customer {issued.principal.customer_id}" if issued.principal.customer_id
             else "") + " — the key is shown only this once", file=sys.stderr)
    return 0


def _aware_date(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _with_shipper(settings: Settings, ship: Callable[[Shipper], str]) -> int:
    """Run one shipping job to completion and print what it did; InfluxDB failing, or another
    process holding the shipping lease, is an exit status and a line, not a traceback."""
    from .influx.shipper import Shipper, ShipperBusy
    from .influx.writers import TransientWriteError, make_writer
    from .tracker import UsageTracker

    if not settings.influxdb.enabled:
        raise ConfigError("influxdb.enabled is false: set it (or CARNIL_INFLUXDB_ENABLED=true)")
    with UsageTracker(settings) as tracker:
        try:
            print(ship(Shipper(tracker.db, settings.influxdb, make_writer(settings.influxdb))))
        except TransientWriteError as exc:
            print(f"carnil-analytics: InfluxDB write failed: {exc}", file=sys.stderr)
            return 1
        except ShipperBusy as exc:
            print(f"carnil-analytics: {exc}", file=sys.stderr)
            return 3
    return 0


def _influx_ship(settings: Settings, _args: argparse.Namespace) -> int:
    return _with_shipper(settings, lambda shipper: f"shipped {shipper.ship_all()} events")


def _influx_backfill(settings: Settings, args: argparse.Namespace) -> int:
    return _with_shipper(settings, lambda shipper: (
        f"wrote {shipper.backfill(args.since)} events since {args.since.isoformat()}"))


def _store_copy(settings: Settings, args: argparse.Namespace) -> int:
    from .store.copy import copy_store
    from .store.database import Database

    target_settings = settings.database.for_store(args.to, "--to")
    source = Database(settings.database)
    target = None
    try:
        target = Database(target_settings)
        copied = copy_store(source, target,
                            lambda table, rows: print(f"  {table:20} {rows:>12,} rows"))
    finally:
        source.close()
        if target is not None:
            target.close()
    print(f"copied {sum(copied.values()):,} rows into {target_settings.shown_url()}")
    return 0


def _check_config(settings: Settings, _args: argparse.Namespace) -> int:
    print(yaml.safe_dump(settings.masked(), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
