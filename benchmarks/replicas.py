"""Scaling out: batch ingest through two ``serve`` replicas on one PostgreSQL, against one
replica on SQLite.

Three set-ups, all on this machine, all loaded by ``wrk`` with ``POST /v1/events`` batches of
1,000 usage events (the body of ``http_api.http_batch_ingest``: 10 customers × 3 features per
batch; here 10 such bodies over 100 customers, sent in turn, so concurrent batches mostly lock
different customers on PostgreSQL):

- **1 replica on SQLite** (a temporary file): the baseline of the rows;
- **2 replicas on one PostgreSQL database**: one wrk per replica, run at the same time with
  half the clients each; their events/s are summed, their p99 is the worse of the two;
- **1 replica on PostgreSQL**: the first of those two replicas alone, for reference.

Runs alternate between the three, so drift hits all. Each replica is ``serve`` with the
default layout (2 workers × 8 threads); PostgreSQL is the test suite's server
(``tests/postgres_server.py``: Debian's PostgreSQL on loopback, durability switched off).
While each set-up runs, the CPU time of each process group (postgres, the gunicorn replicas,
wrk, everything else) is sampled from ``/proc`` to show where the time goes.

Alone: ``python -m benchmarks.replicas [--quick] [--runs N]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from .harness import RATIO_NOTE, Plan, Result, plan_of, plan_parser, say, text_table
from .http_api import CLIENTS, DEFAULT_LAYOUT, Load, _Service, batch_body, running_service
from .ingest import BATCH_SIZE, FEATURES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from postgres_server import PostgresServer  # noqa: E402

CUSTOMERS = [f"customer-{i}" for i in range(100)]
GROUP = 10  # customers per batch body, as in the HTTP batch scenario
PATH = "/v1/events"
SQLITE, PG_TWO, PG_ONE = "1 replica on SQLite", "2 replicas on PostgreSQL", \
    "1 replica on PostgreSQL"


def bodies() -> list[bytes]:
    """10 batch bodies, each 1,000 events over its own 10 customers × the 3 features."""
    return [batch_body([(c, f) for c in CUSTOMERS[start:start + GROUP] for f in FEATURES])
            for start in range(0, len(CUSTOMERS), GROUP)]


# ---------------------------------------------------------------------------------------------
# CPU per process group, from /proc


@dataclass
class CpuShare:
    """CPU seconds per process group over sampled windows; shown as % of one core."""

    seconds: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def add(self, ticks: dict[str, float], wall: float) -> None:
        for group, value in ticks.items():
            self.seconds[group] = self.seconds.get(group, 0.0) + value
        self.wall += wall

    def __str__(self) -> str:
        if not self.wall:
            return "(not sampled)"
        cores = os.cpu_count() or 1
        parts = [f"{group} {100 * value / self.wall:.0f}%"
                 for group, value in self.seconds.items()]
        return (f"{', '.join(parts)} (% of one core; the machine has {cores * 100}%, "
                f"over {self.wall:.0f} s sampled)")


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid → (parent, command name, CPU seconds so far)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                raw = stat.read().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        comm, rest = raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()
        found[int(entry.name)] = (int(rest[1]), comm, (int(rest[11]) + int(rest[12])) / tick)
    return found


def _machine() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as stat:
        values = [int(x) for x in stat.readline().split()[1:8]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / tick, idle / tick


def _group_of(pid: int, table: dict[int, tuple[int, str, float]], roots: dict[int, str]
              ) -> str | None:
    """The named group of ``pid``: the nearest of its ancestors (itself included) that is a
    root, or ``wrk`` for our wrk children. Process groups would not do: PostgreSQL's
    children each call setsid()."""
    seen = pid
    while seen in table and seen > 1:
        if seen in roots:
            return roots[seen]
        seen = table[seen][0]
    parent, comm, _ = table[pid]
    return "wrk" if comm == "wrk" and parent == os.getpid() else None


def sample_cpu(groups: dict[str, int], seconds: float) -> tuple[dict[str, float], float]:
    """CPU seconds used in the next ``seconds`` by each named process tree (name → the pid at
    its top), by our ``wrk`` children, by everything else on the machine, and idle; and the
    wall time sampled."""
    before, machine_before, started = _processes(), _machine(), time.perf_counter()
    time.sleep(seconds)
    after, machine_after, wall = _processes(), _machine(), time.perf_counter() - started
    roots = {pid: name for name, pid in groups.items()}
    used = dict.fromkeys([*groups, "wrk"], 0.0)
    for pid, (_, _, cpu) in after.items():
        group = _group_of(pid, after, roots)
        if group is not None:  # a process started inside the window spent all its time in it
            used[group] += cpu - (before[pid][2] if pid in before else 0.0)
    busy = machine_after[0] - machine_before[0]
    used["other"] = max(0.0, busy - sum(used.values()))  # other processes, interrupts
    used["idle"] = machine_after[1] - machine_before[1]
    return used, wall


# ---------------------------------------------------------------------------------------------
# the scenario


@dataclass
class Setup:
    """One way of serving the load: replicas, each with its wrk script, and what it measured."""

    name: str
    replicas: list[_Service]
    scripts: list[tuple[Path, str]]
    groups: dict[str, int]  # process trees whose CPU is sampled: name → top pid
    loads: list[list[Load]] = field(default_factory=list)  # per run: one Load per replica
    cpu: CpuShare = field(default_factory=CpuShare)

    def run(self, seconds: int, sample: bool = True) -> list[Load]:
        """One wrk per replica, all at once, the clients split between them."""
        clients = CLIENTS // len(self.replicas)
        with ThreadPoolExecutor(len(self.replicas)) as pool:
            running = [pool.submit(service.wrk, script, seconds, clients)
                       for service, script in zip(self.replicas, self.scripts, strict=True)]
            if sample and seconds >= 1:  # the middle of the run: wrk started, not yet ending
                time.sleep(0.2)
                self.cpu.add(*sample_cpu(self.groups, seconds - 0.4))
            return [future.result() for future in running]

    @property
    def events_per_s(self) -> float:
        return statistics.median(sum(r.requests_per_s for r in run) for run in self.loads) \
            * BATCH_SIZE

    @property
    def p99_ms(self) -> float:
        return statistics.median(max(r.p99_ms for r in run) for run in self.loads)


def replicas_batch_ingest(plan: Plan) -> list[Result]:
    """Batch ingest: 2 replicas on PostgreSQL and 1 on PostgreSQL, each against 1 on SQLite."""
    return measure(plan)[0]


def measure(plan: Plan) -> tuple[list[Result], list[Setup]]:
    seconds = 1 if plan.quick else 5
    runs = 1 if plan.quick else plan.runs
    batches = bodies()
    with ExitStack() as stack:
        postgres = PostgresServer.launch()
        stack.callback(postgres.close)  # stops it and removes its files
        database = postgres.new_database()
        stack.callback(postgres.drop_database, database)
        say(f"PostgreSQL up on 127.0.0.1:{postgres.port}, database {database}")
        lite = stack.enter_context(running_service(DEFAULT_LAYOUT))
        first = stack.enter_context(running_service(DEFAULT_LAYOUT, postgres.url(database)))
        second = stack.enter_context(running_service(DEFAULT_LAYOUT, postgres.url(database)))
        for service in (lite, first, second):
            for body in batches:  # fails loudly unless the route answers 2xx; customers known
                service.call("POST", PATH, body)

        def script(service: _Service, turn: int, label: str) -> tuple[Path, str]:
            return service.script(PATH, batches[turn:] + batches[:turn], label)

        postgres_tree = postgres.process.pid  # runuser → postmaster → backends
        setups = [
            Setup(SQLITE, [lite], [script(lite, 0, "sqlite")],
                  {"gunicorn": lite.process.pid}),
            Setup(PG_TWO, [first, second],
                  [script(first, 0, "pg-a"), script(second, len(batches) // 2, "pg-b")],
                  {"postgres": postgres_tree, "gunicorn A": first.process.pid,
                   "gunicorn B": second.process.pid}),
            Setup(PG_ONE, [first], [script(first, 0, "pg-one")],
                  {"postgres": postgres_tree, "gunicorn": first.process.pid}),
        ]
        if not plan.quick:  # warm-up: every worker and thread of every replica
            for setup in setups:
                setup.run(1, sample=False)
        for run in range(1, runs + 1):
            for setup in setups:
                setup.loads.append(setup.run(seconds))
                figures = " + ".join(str(load) for load in setup.loads[-1])
                say(f"  run {run}/{runs} {setup.name}: {figures}")
    return _results(setups), setups


def _results(setups: Sequence[Setup]) -> list[Result]:
    lite, two, one = setups
    name = f"HTTP POST /v1/events, {BATCH_SIZE:,}-event batches over 100 customers"
    for setup in setups:
        say(f"{setup.name}: {setup.events_per_s:,.0f} events/s, p99 {setup.p99_ms:.1f} ms; "
            f"CPU: {setup.cpu}")
    say(f"{PG_TWO} vs {SQLITE}: {two.events_per_s / lite.events_per_s:.2f}× the events/s")
    rows = []
    for setup in (two, one):
        label = f"{name}, {setup.name} (baseline: 1 on SQLite)"
        rows += [Result(label, setup.events_per_s, lite.events_per_s, "events/s", None,
                        higher_is_better=True),
                 Result(f"{label}, p99", setup.p99_ms, lite.p99_ms, "ms", None,
                        higher_is_better=False)]
    return rows


SCENARIOS: list[Callable[[Plan], list[Result]]] = [replicas_batch_ingest]


def main(argv: list[str] | None = None) -> int:
    plan = plan_of(plan_parser(
        "python -m benchmarks.replicas",
        "Batch ingest through 2 serve replicas on PostgreSQL vs 1 on SQLite.",
        quick_help="1 s runs, once: a smoke run").parse_args(argv))
    say(f"{'quick' if plan.quick else 'full'} mode, {DEFAULT_LAYOUT} per replica, median of "
        f"{1 if plan.quick else plan.runs} runs per figure")
    results, setups = measure(plan)
    print()
    print(text_table(results, plan.quick))
    print(RATIO_NOTE)
    print("\nCPU per process group while each set-up ran:")
    for setup in setups:
        print(f"- {setup.name}: {setup.cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
