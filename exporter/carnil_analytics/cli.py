"""The ``carnil-analytics`` command line."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import yaml

from .config import Settings
from .errors import CarnilError


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


def _check_config(settings: Settings, _args: argparse.Namespace) -> int:
    print(yaml.safe_dump(settings.masked(), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
