"""Memory during a soak: mixed traffic against a real ``serve`` for two minutes (seconds in
quick mode), with the resident memory, open files and threads of all its processes sampled;
after a warm-up, the drift must stay under 10 %."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path

from .harness import Plan, Result, say
from .http_api import DEFAULT_LAYOUT, running_service

WARM_UP_SHARE = 0.25  # the first quarter of the soak is warm-up
SAMPLE_EVERY = 2.0

_MIXED_LUA = """\
local headers = {{["Authorization"] = "Bearer {key}", ["Content-Type"] = "application/json"}}
local requests = {{}}
local n = 0
function init(args)
  local batch = {{}}
  for i = 1, 100 do
    batch[i] = string.format('{{"type":"usage","customer_id":"soak-%d","feature_id":"api",' ..
                             '"usage":1}}', i % 20)
  end
  requests = {{
    wrk.format("POST", "/v1/usage", headers,
               '{{"customer_id":"soak-1","feature_id":"api","usage":1}}'),
    wrk.format("POST", "/v1/ai-usage", headers,
               '{{"customer_id":"soak-2","model_id":"gpt-4o","input_tokens":90,' ..
               '"output_tokens":30,"cost":0.001}}'),
    wrk.format("POST", "/v1/events", headers, "[" .. table.concat(batch, ",") .. "]"),
    wrk.format("POST", "/v1/customers/soak-1/features/api/check", headers, '{{"required":1}}'),
    wrk.format("GET", "/v1/customers/soak-1/features/api/meter", headers),
    wrk.format("GET", "/v1/customers/soak-3/report?period=day", headers),
    wrk.format("GET", "/metrics", headers),
  }}
end
function request()
  n = n % #requests + 1
  return requests[n]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %.0f %.0f %.0f\\n", summary.requests, e.status,
                         e.connect + e.read + e.write + e.timeout))
end
"""


def memory_soak(plan: Plan) -> list[Result]:
    duration = plan.pick(120, 8)
    with running_service(DEFAULT_LAYOUT) as service:
        service.call("PUT", "/v1/customers/soak-1/features/api/limit",
                     {"limit": 1e12, "period": "monthly"})
        service.call("POST", "/v1/customers/soak-1/features/api/credits", {"amount": 1e12})
        script = service.tmp / "soak.lua"
        script.write_text(_MIXED_LUA.format(key=service.key), encoding="utf-8")
        samples: list[tuple[float, int, int, int]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_sample, args=(service.process.pid, samples, stop))
        sampler.start()
        done = subprocess.run(["wrk", "-t", "1", "-c", "4", "-d", f"{duration}s", "--timeout",
                               "10s", "-s", str(script), service.base], capture_output=True,
                              text=True, timeout=duration + 60, check=True)
        stop.set()
        sampler.join()
    requests, bad_status, socket_errors = _figures(done.stdout)
    if bad_status or socket_errors:
        raise RuntimeError(f"soak: {bad_status} error answers, {socket_errors} socket errors")
    warm = [s for s in samples if s[0] >= duration * WARM_UP_SHARE]
    first, last = warm[0], warm[-1]
    drift = (last[1] - first[1]) / first[1] * 100
    say(f"soak: {requests:,} requests in {duration}s, RSS {first[1] / 2**20:.1f} → "
        f"{last[1] / 2**20:.1f} MiB ({drift:+.1f} %), fds {first[2]} → {last[2]}, "
        f"threads {first[3]} → {last[3]}")
    # No baseline to run: the "baseline" column shows the allowance itself.
    return [Result(f"RSS drift, {duration}s mixed soak after warm-up (all serve processes)",
                   abs(drift), 10.0, "%", 10.0, higher_is_better=False)]


def _figures(output: str) -> tuple[int, int, int]:
    line = next(x for x in output.splitlines() if x.startswith("BENCH "))
    requests, status, sockets = (int(x) for x in line.split()[1:])
    return requests, status, sockets


def _sample(root: int, samples: list, stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.wait(SAMPLE_EVERY):
        rss = fds = threads = 0
        for pid in _process_tree(root):
            status = _status(pid)
            rss += int(status.get("VmRSS", "0 kB").split()[0]) * 1024
            threads += int(status.get("Threads", "0"))
            with contextlib.suppress(OSError):
                fds += len(os.listdir(f"/proc/{pid}/fd"))
        samples.append((time.monotonic() - started, rss, fds, threads))


def _process_tree(root: int) -> list[int]:
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = int(_status(int(entry.name)).get("PPid", "0"))
            children.setdefault(parent, []).append(int(entry.name))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(children.get(pid, []))
    return tree


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)

