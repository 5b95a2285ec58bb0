"""The ``carnil-analytics`` command line."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import yaml
from pydantic import ValidationError as PydanticValidationError

from .config import Settings
from .errors import CarnilError
from .store.keys import ROLES


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


def _check_config(settings: Settings, _args: argparse.Namespace) -> int:
    print(yaml.safe_dump(settings.masked(), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
