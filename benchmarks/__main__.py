"""``python -m benchmarks [--quick] [--markdown FILE]``: run every scenario, print the table."""

from __future__ import annotations

import sys
from pathlib import Path

from . import (
    checks,
    http_api,
    ingest,
    metrics_scrape,
    pooling,
    replicas,
    reports,
    shipping,
    soak,
)
from .harness import (
    RATIO_NOTE,
    Plan,
    Result,
    machine,
    markdown_table,
    plan_of,
    plan_parser,
    say,
    text_table,
)

SCENARIOS = [
    ingest.track_usage_durable,
    ingest.track_usage_full_sync,
    ingest.track_events_batches,
    checks.check_usage_allowed,
    reports.month_report,
    reports.month_report_postgresql,
    metrics_scrape.metrics_scrape,
    metrics_scrape.metrics_scrape_postgresql,
    *http_api.SCENARIOS,
    *replicas.SCENARIOS,
    *pooling.SCENARIOS,
    shipping.shipping,
    soak.memory_soak,
]


def main(argv: list[str] | None = None) -> int:
    parser = plan_parser(
        "python -m benchmarks",
        "Time the library against raw sqlite3 baselines and print a table.",
        quick_help="tiny sizes: checks that the suite works, judges no speed")
    parser.add_argument("--markdown", metavar="FILE", type=Path,
                        help="also write the table and a machine description to FILE")
    args = parser.parse_args(argv)
    plan = plan_of(args)

    say(f"{'quick' if plan.quick else 'full'} mode, median of {plan.runs} runs per figure")
    results: list[Result] = []
    for scenario in SCENARIOS:
        say(f"{scenario.__name__} ...")
        results.extend(scenario(plan))

    print()
    print(text_table(results, plan.quick))
    print(RATIO_NOTE)
    missed = [r.name for r in results if r.meets_target() is False]
    if plan.quick:
        print("quick mode: sizes too small to judge speed; verdicts skipped.")
    elif missed:
        print(f"targets missed: {', '.join(missed)}")
    if args.markdown:
        args.markdown.write_text(_markdown(results, plan), encoding="utf-8")
        say(f"wrote {args.markdown}")
    return 0


def _markdown(results: list[Result], plan: Plan) -> str:
    mode = "quick (smoke run, not judged)" if plan.quick else "full"
    about = "\n".join(f"- **{key}**: {value}" for key, value in machine().items())
    command = f"python -m benchmarks{' --quick' if plan.quick else ''} --runs {plan.runs}"
    return (f"# Benchmarks\n\nMode: {mode}; each figure is the median of {plan.runs} runs.\n\n"
            f"{markdown_table(results, plan.quick)}\n\n{RATIO_NOTE}\n\n"
            f"## Machine\n\n{about}\n\nCommand: `{command}`\n")


if __name__ == "__main__":
    sys.exit(main())
