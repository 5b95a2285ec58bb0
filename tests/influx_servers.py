"""Real time-series servers for the InfluxDB mirror tests, on free loopback ports in tmp dirs.

- ``InfluxDB1``: Debian's ``influxd`` (InfluxDB 1.x, v1 API: ``/write``, ``/query``, ``/ping``),
  with a config file of its own and a database created on first start.
- ``VictoriaMetrics``: ``victoria-metrics``, which takes InfluxDB line protocol on
  ``/api/v2/write`` and is read back with ``/api/v1/export``.

Both can be ``stop()``-ed and ``start()``-ed again on the same data dir and port (an outage),
and both are always stopped at teardown. A missing binary FAILS the test with a clear message:
CI must never pass silently without the servers. Every wait is bounded; all traffic goes to
127.0.0.1 only, without any proxy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from servers import free_port

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
REQUEST_TIMEOUT_SECONDS = 10.0
START_ATTEMPTS = 3  # a free port may be taken between picking it and binding it

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs: tags of a series


def find_binary(name: str) -> str:
    """The path of ``name`` (on PATH or in /usr/bin); the test FAILS if it is missing."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK)
                                  else None)
    if path is None:
        pytest.fail(f"`{name}` is not installed (not on PATH, not in /usr/bin): the InfluxDB "
                    f"mirror tests need it and are never skipped. Install it (Debian: "
                    f"apt-get install {'influxdb' if name == 'influxd' else name}).",
                    pytrace=False)
    return path


def wait_until(predicate: Callable[[], Any], timeout: float, message: str | Callable[[], str],
               interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or fail after
    ``timeout`` seconds with ``message``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(message() if callable(message) else message, pytrace=False)
        time.sleep(interval)


def labels_of(mapping: dict[str, Any], drop: tuple[str, ...] = ()) -> Labels:
    return tuple(sorted((k, v) for k, v in mapping.items() if k not in drop and v != ""))


class _ServerProcess:
    """A server binary in its own process group, its output in a log file in ``directory``."""

    name = "server"

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.http = requests.Session()
        self.http.trust_env = False  # never a proxy: traffic stays on 127.0.0.1

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    # -- to override ----------------------------------------------------------------------

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _pick_new_ports(self) -> None:
        self.port = free_port()

    def _after_first_start(self) -> None:
        pass

    # -- the process ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start (again) and wait until the server answers; same data dir and port as before
        (only the very first start may move to other ports, if the picked ones were taken)."""
        assert not self.running, f"{self.name} is already running"
        attempts = START_ATTEMPTS if self.starts == 0 else 1
        for attempt in range(attempts):
            if self._start_once():
                break
            if attempt + 1 == attempts or "address already in use" not in self.log_tail():
                pytest.fail(f"{self.name} did not become ready within {START_TIMEOUT_SECONDS} s "
                            f"on {self.url}; log:\n{self.log_tail()}", pytrace=False)
            self._pick_new_ports()
        first = self.starts == 0
        self.starts += 1
        if first:
            self._after_first_start()

    def _start_once(self) -> bool:
        with open(self.log_path, "ab") as log:
            log.write(f"\n---- start {self.starts} ----\n".encode())
            log.flush()
            self.process = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.directory, process_group=0)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if self._ready():
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.kill()
        return False

    def stop(self) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it takes too long; waits until it is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()
        self.http.close()  # no pooled connection to a server that is gone

    def kill(self) -> None:
        """SIGKILL (the servers start no children) and wait until it is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self.http.close()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # -- HTTP -----------------------------------------------------------------------------

    def get(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_SECONDS)
        return self.http.get(self.url + path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_SECONDS)
        return self.http.post(self.url + path, **kwargs)


class InfluxDB1(_ServerProcess):
    """``influxd`` 1.x with its meta, data and WAL dirs in ``directory``."""

    name = "influxd"
    kind = "influxdb1"

    def __init__(self, directory: Path, database: str = "carnil"):
        self.binary = find_binary("influxd")
        super().__init__(directory)
        self.database = database
        self.rpc_port = free_port()
        self.config_path = self.directory / "influxdb.conf"

    def _pick_new_ports(self) -> None:
        self.port, self.rpc_port = free_port(), free_port()

    def _write_config(self) -> None:
        d = self.directory
        self.config_path.write_text(f"""\
reporting-disabled = true
bind-address = "{HOST}:{self.rpc_port}"

[meta]
  dir = "{d / 'meta'}"
  logging-enabled = false

[data]
  dir = "{d / 'data'}"
  wal-dir = "{d / 'wal'}"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "{HOST}:{self.port}"
  log-enabled = false
  pprof-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false
""")

    def _command(self) -> list[str]:
        self._write_config()
        return [self.binary, "-config", str(self.config_path)]

    def _ready(self) -> bool:
        return self.get("/ping", timeout=1).status_code == 204

    def _after_first_start(self) -> None:
        self.create_database(self.database)

    # -- helpers --------------------------------------------------------------------------

    def client_config(self, database: str | None = None, **overrides) -> dict:
        """The ``influxdb`` section of a carnil config that ships here over the v1 API."""
        return {"enabled": True, "api": "v1", "url": self.url,
                "database": database or self.database, **overrides}

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"', method="POST")

    def write(self, lines: list[str] | str, database: str | None = None,
              precision: str = "ns") -> requests.Response:
        """A raw ``/write`` (the answer is returned, not checked)."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        return self.post("/write", params={"db": database or self.database,
                                           "precision": precision}, data=body.encode())

    def query_results(self, q: str, database: str | None = None, method: str = "GET") -> list:
        params = {"q": q, "epoch": "ns", "db": database or self.database}
        answer = (self.post("/query", data=params) if method == "POST"
                  else self.get("/query", params=params))
        assert answer.status_code == 200, f"InfluxQL {q!r}: {answer.status_code} {answer.text}"
        results = answer.json()["results"]
        for result in results:
            assert "error" not in result, f"InfluxQL {q!r}: {result['error']}"
        return results

    def query(self, q: str, database: str | None = None, method: str = "GET") -> list[dict]:
        """The rows of an InfluxQL statement: one dict per row, with its series' tags and, under
        ``"_name"``, its measurement. Times are integers of nanoseconds."""
        rows = []
        for result in self.query_results(q, database, method):
            for series in result.get("series", []):
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(series.get("tags") or {})
                    row["_name"] = series.get("name")
                    rows.append(row)
        return rows

    def count_and_sum(self, measurement: str = "usage", field: str = "quantity",
                      where: str = "", database: str | None = None) -> tuple[int, float]:
        rows = self.query(f'SELECT count("{field}"), sum("{field}") FROM "{measurement}" '
                          f"{where}", database)
        if not rows:
            return 0, 0.0
        assert len(rows) == 1, rows
        # influxd may answer a row of nulls while a shard it has just opened is still empty.
        return rows[0]["count"] or 0, rows[0]["sum"] or 0.0

    def field_values(self, measurement: str, field: str) -> dict[Labels, list]:
        """The sorted values of ``field`` per series (tag set) of ``measurement``."""
        found: dict[Labels, list] = {}
        for row in self.query(f'SELECT "{field}" FROM "{measurement}" GROUP BY *'):
            tags = labels_of(row, drop=("time", field, "_name"))
            found.setdefault(tags, []).append(row[field])
        return {tags: sorted(values) for tags, values in found.items()}

    def times(self, measurement: str, field: str) -> dict[Labels, list[int]]:
        """The sorted point times (ns) per series of ``measurement``."""
        found: dict[Labels, list] = {}
        for row in self.query(f'SELECT "{field}" FROM "{measurement}" GROUP BY *'):
            found.setdefault(labels_of(row, drop=("time", field, "_name")), []).append(
                row["time"])
        return {tags: sorted(values) for tags, values in found.items()}

    def field_types(self, measurement: str) -> dict[str, str]:
        return {row["fieldKey"]: row["fieldType"]
                for row in self.query(f'SHOW FIELD KEYS FROM "{measurement}"')}

    def tag_keys(self, measurement: str) -> set[str]:
        return {row["tagKey"] for row in self.query(f'SHOW TAG KEYS FROM "{measurement}"')}


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    values: list[float]
    timestamps: list[int]  # milliseconds


class VictoriaMetrics(_ServerProcess):
    """``victoria-metrics`` with its storage in ``directory``; InfluxDB line protocol comes in
    on ``/api/v2/write`` as metrics named ``<measurement>_<field>``."""

    name = "victoria-metrics"
    kind = "victoriametrics"

    def __init__(self, directory: Path):
        self.binary = find_binary("victoria-metrics")
        super().__init__(directory)

    def _command(self) -> list[str]:
        return [self.binary, f"-storageDataPath={self.directory / 'storage'}",
                f"-httpListenAddr={HOST}:{self.port}", "-loggerLevel=WARN"]

    def _ready(self) -> bool:
        return self.get("/health", timeout=1).status_code == 200

    # -- helpers --------------------------------------------------------------------------

    def client_config(self, **overrides) -> dict:
        """The ``influxdb`` section of a carnil config that ships here over the v2 API."""
        return {"enabled": True, "api": "v2", "url": self.url, "org": "carnil",
                "bucket": "carnil", "token": "unused", **overrides}

    def flush(self) -> None:
        """Make what was written searchable now."""
        answer = self.get("/internal/force_flush")
        assert answer.status_code == 200, answer.text

    def export(self, match: str) -> list[Series]:
        """Every sample of the series matching the selector ``match``."""
        self.flush()
        answer = self.post("/api/v1/export", data={"match[]": match})
        assert answer.status_code == 200, f"export {match!r}: {answer.status_code} {answer.text}"
        found = []
        for line in answer.text.splitlines():
            if line.strip():
                item = json.loads(line)
                found.append(Series(item["metric"], item["values"], item["timestamps"]))
        return found

    def samples(self, metric: str) -> dict[Labels, list[float]]:
        """The sorted sample values of ``metric`` per series (labels without ``__name__``)."""
        found: dict[Labels, list] = {}
        for series in self.export(f'{{__name__="{metric}"}}'):
            found.setdefault(labels_of(series.labels, drop=("__name__",)), []).extend(
                series.values)
        return {labels: sorted(values) for labels, values in found.items()}

    def field_values(self, measurement: str, field: str) -> dict[Labels, list]:
        return self.samples(f"{measurement}_{field}")

    def times(self, measurement: str, field: str) -> dict[Labels, list[int]]:
        """The sorted sample times (ms) per series of ``<measurement>_<field>``."""
        found: dict[Labels, list] = {}
        for series in self.export(f'{{__name__="{measurement}_{field}"}}'):
            found.setdefault(labels_of(series.labels, drop=("__name__",)), []).extend(
                series.timestamps)
        return {labels: sorted(values) for labels, values in found.items()}

    def count_and_sum(self, measurement: str = "usage",
                      field: str = "quantity") -> tuple[int, float]:
        values = [v for vs in self.field_values(measurement, field).values() for v in vs]
        return len(values), sum(values)


Target = InfluxDB1 | VictoriaMetrics


@contextlib.contextmanager
def started(server: _ServerProcess) -> Iterator[_ServerProcess]:
    """``server`` started, and always stopped at the end (killed if it will not stop)."""
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.kill()


@pytest.fixture
def influxd(tmp_path_factory) -> Iterator[InfluxDB1]:
    """A fresh ``influxd`` 1.x with database ``carnil``."""
    with started(InfluxDB1(tmp_path_factory.mktemp("influxd"))) as server:
        yield server


@pytest.fixture
def victoria(tmp_path_factory) -> Iterator[VictoriaMetrics]:
    """A fresh ``victoria-metrics``."""
    with started(VictoriaMetrics(tmp_path_factory.mktemp("victoria"))) as server:
        yield server


@pytest.fixture(params=["influxdb1", "victoriametrics"])
def target(request, tmp_path_factory) -> Iterator[Target]:
    """Each of the two servers in turn: influxd over the v1 API, VictoriaMetrics over v2."""
    if request.param == "influxdb1":
        server = InfluxDB1(tmp_path_factory.mktemp("influxd"))
    else:
        server = VictoriaMetrics(tmp_path_factory.mktemp("victoria"))
    with started(server):
        yield server
