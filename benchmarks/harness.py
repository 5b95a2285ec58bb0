"""What every scenario shares: results, the run plan, timing and medians, progress, tables."""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

_STARTED = time.perf_counter()

COLUMNS = ("scenario", "ours", "baseline", "ratio", "target", "verdict")
RATIO_NOTE = ("ratio = our speed relative to the baseline (ours/baseline for throughput, "
              "baseline/ours for latency): 1.0× is as fast as the baseline, below 1 is slower.")


@dataclass(frozen=True)
class Result:
    """One row of the table: our figure and the baseline's, both medians of several runs."""

    name: str
    ours: float
    baseline: float
    unit: str
    target: float | None  # None: reported, not judged
    higher_is_better: bool

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.ours / self.baseline
        return self.baseline / self.ours

    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        return self.ours >= self.target if self.higher_is_better else self.ours <= self.target

    def cells(self, quick: bool) -> tuple[str, ...]:
        target = "—" if self.target is None else \
            f"{'≥' if self.higher_is_better else '≤'} {self.target:,g} {self.unit}"
        met = self.meets_target()
        verdict = "— (quick)" if quick else "—" if met is None else "pass" if met else "MISS"
        ratio = f"{self.ratio:.{0 if self.ratio >= 10 else 2}f}×"
        return (self.name, f"{_number(self.ours)} {self.unit}",
                f"{_number(self.baseline)} {self.unit}", ratio, target, verdict)


@dataclass(frozen=True)
class Plan:
    """How big and how often: full sizes, or tiny ones that only prove the suite works."""

    quick: bool
    runs: int

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def plan_parser(prog: str, description: str,
                quick_help: str = "tiny sizes: a smoke run") -> argparse.ArgumentParser:
    """A command line with the options every benchmark entry point takes: --quick, --runs."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per figure (its median is reported; default 5, quick 3)")
    return parser


def plan_of(args: argparse.Namespace) -> Plan:
    """The plan the parsed --quick and --runs ask for."""
    return Plan(quick=args.quick, runs=args.runs or (3 if args.quick else 5))


def seconds(action: Callable[[], object]) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_of(runs: int, measure: Callable[[], float]) -> float:
    """The median of ``runs`` measurements."""
    return statistics.median(measure() for _ in range(runs))


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``samples`` (``fraction`` in [0, 1])."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def say(message: str) -> None:
    """A progress line on stderr, with the time since the suite started."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def text_table(results: list[Result], quick: bool) -> str:
    rows = [COLUMNS, *(r.cells(quick) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: list[Result], quick: bool) -> str:
    rows = [COLUMNS, ("---", *("---:" for _ in COLUMNS[1:])), *(r.cells(quick) for r in results)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def machine() -> dict[str, str]:
    """Where the figures were measured."""
    return {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} logical, {_usable_cores()} usable by this process",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _usable_cores() -> int | str:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
