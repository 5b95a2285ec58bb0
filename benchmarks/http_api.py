"""HTTP scenarios: the service under gunicorn (``serve``) on loopback, loaded by ``wrk``.

Each scenario starts its own server (``python -m benchmarks.bench_server``: the real app plus
a bare ``POST /bench/noop`` → 204 route, see ``bench_server.py``) on a temporary SQLite
database, waits for ``/healthz``, runs ``wrk`` in a separate process against a real route and
against the bare route with the same body, headers and concurrency (runs alternate, so drift
hits both), then stops the server with SIGTERM. The bare route is the baseline: gunicorn,
Flask, the request log and the body transfer, without our work.

``wrk`` (Debian package ``wrk``) must be on the PATH.

Alone: ``python -m benchmarks.http_api [--quick] [--runs N] [--workers W] [--threads T]`` runs
just these scenarios, e.g. to compare server layouts.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import yaml

from .bench_server import NOOP_PATH
from .harness import RATIO_NOTE, Plan, Result, plan_of, plan_parser, say, text_table
from .ingest import BATCH_SIZE, METERS

ROOT = Path(__file__).resolve().parent.parent  # where ``benchmarks`` is importable from
CLIENTS, WRK_THREADS = 16, 2
CUSTOMER, FEATURE = "customer-0", "api_calls"
START_TIMEOUT, STOP_TIMEOUT = 30.0, 15.0  # seconds


@dataclass(frozen=True)
class Layout:
    """gunicorn processes × threads per process (``server.workers`` × ``server.threads``)."""

    workers: int = 2
    threads: int = 8

    def __str__(self) -> str:
        return f"{self.workers} workers × {self.threads} threads"


DEFAULT_LAYOUT = Layout()


@dataclass(frozen=True)
class Load:
    """One wrk run: throughput and latency percentiles (ms)."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float

    def __str__(self) -> str:
        return (f"{self.requests_per_s:,.0f} req/s, p50 {self.p50_ms:.2f} ms, "
                f"p99 {self.p99_ms:.2f} ms")


# ---------------------------------------------------------------------------------------------
# scenarios


def http_batch_ingest(plan: Plan, layout: Layout = DEFAULT_LAYOUT) -> list[Result]:
    """``POST /v1/events`` with JSON arrays of 1,000 usage events (10 customers × 3 features)."""
    name = f"HTTP POST /v1/events, {BATCH_SIZE:,}-event batches, {CLIENTS} clients"
    body = batch_body(METERS)
    with running_service(layout) as service:
        ours, bare = _compare(plan, service, "/v1/events", body)
    events = statistics.median(r.requests_per_s for r in ours) * BATCH_SIZE
    base = statistics.median(r.requests_per_s for r in bare) * BATCH_SIZE
    p99 = statistics.median(r.p99_ms for r in ours)
    base_p99 = statistics.median(r.p99_ms for r in bare)
    say(f"{name}: ours {events:,.0f} events/s p99 {p99:.1f} ms, "
        f"bare 204 route {base:,.0f} events/s p99 {base_p99:.1f} ms")
    return [Result(name, events, base, "events/s", 30_000, higher_is_better=True),
            Result(f"{name}, p99", p99, base_p99, "ms", None, higher_is_better=False)]


def http_usage_single(plan: Plan, layout: Layout = DEFAULT_LAYOUT) -> list[Result]:
    """``POST /v1/usage``, one event per request, 16 keep-alive clients."""
    name = f"HTTP POST /v1/usage, {CLIENTS} clients"
    body = json.dumps({"customer_id": CUSTOMER, "feature_id": FEATURE, "usage": 1.0}).encode()
    with running_service(layout) as service:
        ours, bare = _compare(plan, service, "/v1/usage", body)
    return _rate_and_p99(name, ours, bare, rate_target=1000, p99_target=20)


def http_check(plan: Plan, layout: Layout = DEFAULT_LAYOUT) -> list[Result]:
    """``POST .../check {"required": 1}`` on a meter with a limit and credits, 16 clients."""
    name = f"HTTP POST .../check, {CLIENTS} clients"
    feature = f"/v1/customers/{CUSTOMER}/features/{FEATURE}"
    with running_service(layout) as service:
        service.call("PUT", f"{feature}/limit", {"limit": 1_000_000, "period": "monthly"})
        service.call("POST", f"{feature}/credits", {"amount": 500_000})
        answer = service.call("POST", f"{feature}/check", {"required": 1})
        if not answer.get("allowed"):
            say(f"WARNING: the check refused usage that fits the limit and credits: {answer}")
        ours, bare = _compare(plan, service, f"{feature}/check", b'{"required": 1}')
    return _rate_and_p99(name, ours, bare, rate_target=None, p99_target=5)


SCENARIOS = [http_batch_ingest, http_usage_single, http_check]


def batch_body(meters: Sequence[tuple[str, str]]) -> bytes:
    """A ``POST /v1/events`` body: ``BATCH_SIZE`` usage events cycling over ``meters``
    ((customer, feature) pairs), 1.0 each."""
    return json.dumps([{"type": "usage", "customer_id": c, "feature_id": f, "usage": 1.0}
                       for c, f in (meters[i % len(meters)] for i in range(BATCH_SIZE))],
                      separators=(",", ":")).encode()


def _rate_and_p99(name: str, ours: list[Load], bare: list[Load], rate_target: float | None,
                  p99_target: float) -> list[Result]:
    rate = statistics.median(r.requests_per_s for r in ours)
    base_rate = statistics.median(r.requests_per_s for r in bare)
    p99 = statistics.median(r.p99_ms for r in ours)
    base_p99 = statistics.median(r.p99_ms for r in bare)
    say(f"{name}: ours {rate:,.0f} req/s p99 {p99:.2f} ms, "
        f"bare 204 route {base_rate:,.0f} req/s p99 {base_p99:.2f} ms")
    return [Result(f"{name}, throughput", rate, base_rate, "req/s", rate_target,
                   higher_is_better=True),
            Result(f"{name}, p99", p99, base_p99, "ms", p99_target, higher_is_better=False)]


def _compare(plan: Plan, service: _Service, path: str, body: bytes
             ) -> tuple[list[Load], list[Load]]:
    """wrk runs on ``path`` and on the bare route, alternating: (ours, bare)."""
    seconds = 1 if plan.quick else 5
    runs = 1 if plan.quick else plan.runs
    service.call("POST", path, body)  # fails loudly unless the route answers 2xx
    service.call("POST", NOOP_PATH, body)
    ours_script = service.script(path, body, "ours")
    bare_script = service.script(NOOP_PATH, body, "bare")
    if not plan.quick:  # warm-up: every worker and thread, both routes
        service.wrk(ours_script, 1)
        service.wrk(bare_script, 1)
    ours, bare = [], []
    for run in range(1, runs + 1):
        ours.append(service.wrk(ours_script, seconds))
        bare.append(service.wrk(bare_script, seconds))
        say(f"  run {run}/{runs} {path}: {ours[-1]} | bare: {bare[-1]}")
    return ours, bare


# ---------------------------------------------------------------------------------------------
# the server process and the load generator

# Each wrk connection sends the same request, or with several bodies each request the next
# body in turn (each wrk thread starting at another one); done() prints the figures on one line.
_LUA = """\
local bodies = {{}}
for i, path in ipairs({{{bodies}}}) do
  local file = assert(io.open(path, "rb"))
  bodies[i] = file:read("*a")
  file:close()
end
wrk.method = "POST"
wrk.body = bodies[1]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"

if #bodies > 1 then
  local threads = 0
  function setup(thread)
    thread:set("turn", threads * 7)
    threads = threads + 1
  end
  function request()
    turn = (turn or 0) + 1
    return wrk.format(nil, nil, nil, bodies[turn % #bodies + 1])
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class _Service:
    """A running ``bench_server``: its address, admin key and work directory."""

    def __init__(self, process: subprocess.Popen, port: int, key: str, tmp: Path, log: Path):
        self.process, self.port, self.key, self.tmp, self.log = process, port, key, tmp, log
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body: object) -> dict:
        """One request with the admin key; its JSON answer ({} if none), or an error."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path} answered {exc.code}: "
                               f"{exc.read()[:500].decode(errors='replace')}") from None
        return json.loads(raw) if raw else {}

    def script(self, path: str, body: bytes | Sequence[bytes], label: str
               ) -> tuple[Path, str]:
        """A wrk script posting ``body`` (or each of several bodies in turn) to ``path``."""
        files = []
        for index, one in enumerate([body] if isinstance(body, bytes) else body):
            files.append(self.tmp / f"{label}.{index}.body")
            files[-1].write_bytes(one)
        lua = self.tmp / f"{label}.lua"
        lua.write_text(_LUA.format(bodies=", ".join(f'"{f}"' for f in files), key=self.key),
                       encoding="utf-8")
        return lua, self.base + path

    def wrk(self, script: tuple[Path, str], seconds: int, clients: int = CLIENTS) -> Load:
        lua, url = script
        command = ["wrk", "-t", str(WRK_THREADS), "-c", str(clients), "-d", f"{seconds}s",
                   "--timeout", "10s", "--latency", "-s", str(lua), url]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=True,
                                  timeout=seconds + 30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"wrk failed on {url}: {exc}\n{exc.stderr or ''}") from None
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
        if line is None:
            raise RuntimeError(f"no figures in wrk's output:\n{done.stdout}\n{done.stderr}")
        requests, duration_us, p50_us, p99_us, *errors = (float(x) for x in line.split()[1:])
        if any(errors) or not requests:
            connect, read, write, status, timeout = (int(x) for x in errors)
            raise RuntimeError(
                f"wrk on {url}: {requests:.0f} requests, {status} non-2xx/3xx answers, socket "
                f"errors connect {connect} read {read} write {write} timeout {timeout}\n"
                f"{done.stdout}\nserver log (end):\n{self.log_tail()}")
        return Load(requests / (duration_us / 1e6), p50_us / 1000, p99_us / 1000)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def running_service(layout: Layout, database_url: str | None = None) -> Iterator[_Service]:
    """A server on a free loopback port and a fresh temporary SQLite database (or the store
    at ``database_url``); stopped on exit."""
    if shutil.which("wrk") is None:
        raise RuntimeError("the HTTP scenarios need wrk on the PATH: apt-get install -y wrk")
    with tempfile.TemporaryDirectory(prefix="carnil-bench-http-") as name:
        tmp = Path(name)
        key, port = secrets.token_urlsafe(24), _free_port()
        config = tmp / "carnil.yaml"
        config.write_text(yaml.safe_dump({
            "database": {"url": database_url or f"sqlite:///{tmp}/carnil.db"},
            "server": {"host": "127.0.0.1", "port": port, "workers": layout.workers,
                       "threads": layout.threads, "graceful_timeout_seconds": 5},
            "auth": {"admin_key": key},
        }), encoding="utf-8")
        # The config file alone decides: no CARNIL_* variable of this shell overrides it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARNIL_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        log = tmp / "server.log"
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bench_server", str(config)], cwd=ROOT,
                env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True)  # its own process group: master and workers
        service = _Service(process, port, key, tmp, log)
        try:
            started = time.perf_counter()
            _wait_healthy(service)
            say(f"server up on 127.0.0.1:{port} ({layout}) in "
                f"{time.perf_counter() - started:.1f}s")
            yield service
        finally:
            _stop(process)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(service: _Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"the server exited with {service.process.returncode}:\n"
                               f"{service.log_tail()}")
        try:
            with urllib.request.urlopen(service.base + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the server did not answer /healthz within {START_TIMEOUT:.0f}s:\n"
                       f"{service.log_tail()}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (gunicorn's graceful stop); SIGKILL to its process group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            say(f"WARNING: the server ignored SIGTERM for {STOP_TIMEOUT:.0f}s; killing it")
    with suppress(ProcessLookupError):  # leftover workers of a dead or hung master
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = plan_parser(
        "python -m benchmarks.http_api",
        "Run only the HTTP scenarios, optionally with another server layout.",
        quick_help="1 s runs, once: a smoke run")
    parser.add_argument("--workers", type=int, default=DEFAULT_LAYOUT.workers)
    parser.add_argument("--threads", type=int, default=DEFAULT_LAYOUT.threads)
    args = parser.parse_args(argv)
    plan = plan_of(args)
    layout = Layout(args.workers, args.threads)
    say(f"{'quick' if plan.quick else 'full'} mode, {layout}, median of "
        f"{1 if plan.quick else plan.runs} runs per figure")
    results: list[Result] = []
    for scenario in SCENARIOS:
        say(f"{scenario.__name__} ...")
        results.extend(scenario(plan, layout))
    print(f"\nserver: {layout}")
    print(text_table(results, plan.quick))
    print(RATIO_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
