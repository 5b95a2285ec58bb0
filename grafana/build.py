"""Generate the Grafana dashboards into grafana/dashboards/*.json.

    python grafana/build.py            write the files (unchanged ones are left untouched)
    python grafana/build.py --check    exit 1 if a committed file differs from the generator

The output is deterministic (sorted keys, fixed uids and ids), so regenerating without a change
in the code leaves the files byte-identical.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import customer_usage
import exporter_health
import fleet_overview

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dashboards"


def cost_unit(currency: str) -> str:
    """Grafana's unit for an ISO 4217 currency (a suffix for those Grafana does not name)."""
    named = {"USD", "GBP", "EUR", "JPY", "RUB", "UAH", "BRL", "DKK", "ISK", "NOK", "SEK", "CZK",
             "CHF", "PLN", "BTC", "ZAR", "INR", "KRW", "IDR", "PHP", "VND", "TRY", "MYR"}
    return f"currency{currency}" if currency in named else f"suffix: {currency}"


def dashboards(currency: str = "USD") -> dict[str, dict]:
    """File name → dashboard model."""
    unit = cost_unit(currency)
    return {
        "customer-usage.json": customer_usage.build(unit),
        "fleet-overview.json": fleet_overview.build(unit),
        "exporter-health.json": exporter_health.build(),
    }


def render(model: dict) -> str:
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered(currency: str = "USD") -> dict[str, str]:
    """File name → the exact text of the file."""
    return {name: render(model) for name, model in dashboards(currency).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare with the committed files")
    parser.add_argument("--currency", default="USD", help="pricing.currency (default USD)")
    args = parser.parse_args(argv)
    wanted = rendered(args.currency)
    stale = sorted(p.name for p in OUTPUT.glob("*.json") if p.name not in wanted)
    differing = [name for name, text in wanted.items()
                 if not (OUTPUT / name).is_file()
                 or (OUTPUT / name).read_text(encoding="utf-8") != text]
    if args.check:
        for name in differing + stale:
            print(f"grafana/dashboards/{name} is not what grafana/build.py generates",
                  file=sys.stderr)
        return 1 if differing or stale else 0
    OUTPUT.mkdir(exist_ok=True)
    for name in differing:
        (OUTPUT / name).write_text(wanted[name], encoding="utf-8")
        print(f"wrote grafana/dashboards/{name}")
    for name in stale:
        (OUTPUT / name).unlink()
        print(f"removed grafana/dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
