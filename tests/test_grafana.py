"""The Grafana bundle: generated dashboards, provisioning, and every panel query run for real.

There is no Grafana binary here, so the dashboards are checked in two ways:

- structure: the committed JSON is exactly what ``grafana/build.py`` generates; uids are fixed
  and unique; panel ids unique; the grid fits 24 columns without overlaps; collapsed rows hold
  panels; every datasource is a provisioned uid; every template variable a query uses is
  defined; every metric a query names is one the exporter exposes;
- queries: a real ``serve`` (SQLite, filled by ``carnil-analytics demo`` plus fresh events,
  limits and credits) mirrors into a real ``influxd`` 1.x and is scraped, with its metrics key
  read from a ``credentials_file``, by a real Prometheus. Every PromQL and InfluxQL target of
  every panel, and every variable query, is run with Grafana's variables and macros filled in
  as Grafana would, for several selections; each must be accepted, and with everything
  selected each must return data.

What Grafana itself does with the answers (transformations, units, rendering) is not run here.
A missing ``prometheus`` or ``influxd`` FAILS these tests; they are never skipped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml

from servers import HOST, free_port, run_cli, running_server

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DATASOURCES_FILE = ROOT / "provisioning" / "grafana" / "datasources" / "carnil.yml"
PROVIDER_FILE = ROOT / "provisioning" / "grafana" / "dashboards" / "carnil.yml"
COMPOSE_FILE = ROOT / "docker-compose.yml"

EXPECTED_UIDS = {
    "customer-usage.json": "carnil-customer-usage",
    "fleet-overview.json": "carnil-fleet-overview",
    "exporter-health.json": "carnil-exporter-health",
}
GRID_COLUMNS = 24
START_TIMEOUT = 30.0
DATA_TIMEOUT = 60.0
CUSTOMER = "acme"  # a customer of the demo data; the test adds credits and fresh events
JOB = "carnil"  # the scrape job of the test Prometheus
METRICS_KEY = "grafana-test-metrics-key-0123456789abcdef"  # auth.metrics_key of the exporter

# Grafana's global macros as the tests fill them in (a 1 h range, 1 m steps).
MACROS = {
    "__interval": "1m", "__interval_ms": "60000", "__rate_interval": "1m", "__range": "1h",
    "__range_s": "3600", "__range_ms": "3600000",
}
ALL = object()  # "All" selected in a multi-value variable
# Selections of the dashboards' variables; the first one selects everything.
SCENARIOS = {
    "all": {"customer": CUSTOMER, "feature": ALL, "model": ALL, "period": "30", "top": "10",
            "job": JOB},
    "one": {"customer": CUSTOMER, "feature": ["api_calls"], "model": ["gpt-4o"],
            "period": "7", "top": "5", "job": JOB},
    "two": {"customer": CUSTOMER, "feature": ["api_calls", "messages"],
            "model": ["gpt-4o", "claude-sonnet-4"], "period": "1", "top": "20", "job": JOB},
}
VARIABLE_REFERENCE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


# ------------------------------------------------------------------------------ the generator


def _load_build():
    """grafana/build.py as a module (its sibling modules importable), under a private name."""
    if str(GRAFANA) not in sys.path:
        sys.path.insert(0, str(GRAFANA))
    spec = importlib.util.spec_from_file_location("carnil_grafana_build", GRAFANA / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()


def committed() -> dict[str, dict]:
    return {name: json.loads((GRAFANA / "dashboards" / name).read_text(encoding="utf-8"))
            for name in EXPECTED_UIDS}


def all_panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, rows and the panels inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def query_panels(dashboard: dict) -> Iterator[dict]:
    return (p for p in all_panels(dashboard) if p["type"] != "row")


def targets(dashboard: dict) -> Iterator[tuple[dict, dict]]:
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            yield panel, target


def target_text(target: dict) -> str:
    return target["expr"] if target["datasource"]["type"] == "prometheus" else target["query"]


def variable_query(variable: dict) -> str | None:
    """The datasource query of a query variable (None for other kinds)."""
    if variable["type"] != "query":
        return None
    query = variable["query"]
    return query["query"] if isinstance(query, dict) else query


def provisioned_datasources() -> dict[str, dict]:
    document = yaml.safe_load(DATASOURCES_FILE.read_text())
    return {source["uid"]: source for source in document["datasources"]}


# ------------------------------------------------------------------------------ structure


def test_committed_dashboards_are_what_the_generator_writes():
    generated = build.rendered()
    assert set(generated) == set(EXPECTED_UIDS)
    on_disk = {p.name for p in (GRAFANA / "dashboards").glob("*.json")}
    assert on_disk == set(generated), "stale or missing files in grafana/dashboards"
    for name, text in generated.items():
        assert (GRAFANA / "dashboards" / name).read_text(encoding="utf-8") == text, (
            f"grafana/dashboards/{name} differs: run `python grafana/build.py`")
    assert build.rendered() == generated, "the generator is not deterministic"
    script = subprocess.run([sys.executable, str(GRAFANA / "build.py"), "--check"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert script.returncode == 0, script.stderr


def test_uids_are_fixed_and_unique_and_the_model_is_grafana_11():
    dashboards = committed()
    assert {name: d["uid"] for name, d in dashboards.items()} == EXPECTED_UIDS
    assert len({d["title"] for d in dashboards.values()}) == len(dashboards)
    for dashboard in dashboards.values():
        assert dashboard["schemaVersion"] == 39
        assert "id" not in dashboard  # provisioned: Grafana assigns it
        assert "carnil" in dashboard["tags"]


def test_panel_ids_are_unique_and_every_panel_has_a_query_and_a_title():
    for name, dashboard in committed().items():
        ids = [panel["id"] for panel in all_panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        titles = [panel["title"] for panel in all_panels(dashboard)]
        assert len(titles) == len(set(titles)), f"{name}: duplicate panel titles"
        for panel in query_panels(dashboard):
            assert panel["targets"], f"{name}: {panel['title']} has no query"
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), f"{name}: {panel['title']}"


def _check_grid(name: str, panels: list[dict]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0, f"{name}: {panel['title']} {grid}"
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, (
            f"{name}: {panel['title']} is wider than the grid: {grid}")
        assert grid["y"] >= 0
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], (
                    f"{name}: {panel['title']} overlaps {other} at x={x}, y={y}")


def test_grid_fits_24_columns_without_overlaps_and_rows_hold_panels():
    for name, dashboard in committed().items():
        top = dashboard["panels"]
        _check_grid(name, top)
        for index, panel in enumerate(top):
            if panel["type"] != "row":
                continue
            assert panel["gridPos"]["w"] == GRID_COLUMNS and panel["gridPos"]["h"] == 1
            if panel["collapsed"]:
                children = panel["panels"]
                assert children, f"{name}: collapsed row {panel['title']!r} is empty"
                assert all(c["gridPos"]["y"] > panel["gridPos"]["y"] for c in children)
                # expanded, the children take the place of the row's content
                _check_grid(f"{name} ({panel['title']})", [panel, *children])
            else:
                assert not panel["panels"]
                following = top[index + 1:index + 2]
                assert following and following[0]["type"] != "row", (
                    f"{name}: row {panel['title']!r} has no panels")
    customer = committed()["customer-usage.json"]
    rows = {p["title"]: p for p in customer["panels"] if p["type"] == "row"}
    assert rows["AI usage"]["collapsed"] and rows["Cost breakdown"]["collapsed"]


def test_every_datasource_is_provisioned():
    provisioned = provisioned_datasources()
    for name, dashboard in committed().items():
        for panel in query_panels(dashboard):
            assert panel["datasource"]["uid"] in provisioned, f"{name}: {panel['title']}"
            for target in panel["targets"]:
                source = target["datasource"]
                assert source["uid"] in provisioned, f"{name}: {panel['title']}"
                assert provisioned[source["uid"]]["type"] == source["type"]
        for variable in dashboard["templating"]["list"]:
            if "datasource" in variable:
                assert variable["datasource"]["uid"] in provisioned, f"{name}: {variable}"


def test_every_variable_a_query_uses_is_defined():
    for name, dashboard in committed().items():
        defined = {v["name"] for v in dashboard["templating"]["list"]}
        texts = [target_text(t) for _, t in targets(dashboard)]
        texts += [q for v in dashboard["templating"]["list"] if (q := variable_query(v))]
        for text in texts:
            for match in VARIABLE_REFERENCE.finditer(text):
                used = next(g for g in match.groups() if g)
                assert used in defined or used in MACROS or used == "timeFilter", (
                    f"{name}: ${used} in {text!r}")
        assert defined <= set(SCENARIOS["all"]), f"{name}: the tests do not fill {defined}"


def test_provisioning_matches_the_compose_stack():
    sources = provisioned_datasources()
    assert set(sources) == {"carnil-prometheus", "carnil-influxdb"}
    prometheus, influx = sources["carnil-prometheus"], sources["carnil-influxdb"]
    assert prometheus["type"] == "prometheus" and prometheus["url"] == "http://prometheus:9090"
    assert influx["type"] == "influxdb" and influx["url"] == "http://influxdb:8086"
    assert influx["jsonData"]["version"] == "InfluxQL"
    assert influx["jsonData"]["dbName"] == influx["database"] == "${INFLUXDB_BUCKET}"
    assert influx["jsonData"]["httpHeaderName1"] == "Authorization"
    assert influx["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUXDB_TOKEN}"

    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    grafana = compose["services"]["grafana"]
    assert {"INFLUXDB_TOKEN", "INFLUXDB_BUCKET"} <= set(grafana["environment"])
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./provisioning/grafana"
    provider = yaml.safe_load(PROVIDER_FILE.read_text())["providers"][0]
    assert provider["type"] == "file" and provider["folder"] == "Carnil"
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"


# ------------------------------------------------------------------------------ real servers


def find_binary(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK)
                                  else None)
    if path is None:
        pytest.fail(f"`{name}` is not installed: the dashboard query tests need it and are "
                    f"never skipped (Debian: apt-get install {package}).", pytrace=False)
    return path


def http_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # never a proxy: everything stays on 127.0.0.1
    return session


def wait_for(predicate: Callable[[], object], timeout: float, what: Callable[[], str]):
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException):
            result = predicate()
            if result:
                return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what()}", pytrace=False)
        time.sleep(0.1)


class Daemon:
    """A server binary in its own process group, logging to a file; always stopped."""

    def __init__(self, name: str, command: list[str], directory: Path, url: str,
                 ready_path: str, ready_status: int):
        self.name, self.command, self.directory, self.url = name, command, directory, url
        self.ready_path, self.ready_status = ready_path, ready_status
        self.log_path = directory / f"{name}.log"
        self.http = http_session()
        self.process: subprocess.Popen | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() \
            else "(no log)"

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.directory,
                                            process_group=0)

        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.log()}",
                            pytrace=False)
            answer = self.http.get(self.url + self.ready_path, timeout=1)
            return answer.status_code == self.ready_status

        wait_for(ready, START_TIMEOUT, lambda: f"{self.name} on {self.url}:\n{self.log()}")

    def stop(self) -> None:
        self.http.close()
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


class Influxd(Daemon):
    """InfluxDB 1.x (Debian's ``influxd``) with its dirs and config in ``directory``."""

    def __init__(self, directory: Path):
        port = free_port()
        config = directory / "influxdb.conf"
        config.write_text(f"""\
reporting-disabled = true
bind-address = "{HOST}:{free_port()}"
[meta]
  dir = "{directory / 'meta'}"
[data]
  dir = "{directory / 'data'}"
  wal-dir = "{directory / 'wal'}"
  query-log-enabled = false
[http]
  bind-address = "{HOST}:{port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
""")
        super().__init__("influxd", [find_binary("influxd", "influxdb"), "-config", str(config)],
                         directory, f"http://{HOST}:{port}", "/ping", 204)

    def query(self, q: str, method: str = "GET") -> list[dict]:
        """The ``results`` of one InfluxQL request; fails on an HTTP error."""
        params = {"db": "carnil", "q": q, "epoch": "ms"}
        answer = (self.http.post(self.url + "/query", data=params, timeout=30)
                  if method == "POST" else
                  self.http.get(self.url + "/query", params=params, timeout=30))
        assert answer.status_code == 200, f"InfluxQL {q!r}: {answer.status_code} {answer.text}"
        return answer.json()["results"]

    def count(self, measurement: str, field: str) -> int:
        series = self.query(f'SELECT count("{field}") FROM "{measurement}"')[0].get("series")
        return series[0]["values"][0][1] if series else 0


class Prometheus(Daemon):
    """Prometheus scraping the exporter every second, with a metrics key from a file."""

    def __init__(self, directory: Path, target: str, key_file: Path, rules_file: Path):
        port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(rules_file)],
            "scrape_configs": [{
                "job_name": JOB,
                "authorization": {"type": "Bearer", "credentials_file": str(key_file)},
                "static_configs": [{"targets": [target]}],
            }],
        }))
        super().__init__("prometheus", [
            find_binary("prometheus", "prometheus"), f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address={HOST}:{port}",
            "--log.level=warn"], directory, f"http://{HOST}:{port}", "/-/ready", 200)

    def api(self, path: str, method: str = "POST", **params) -> dict:
        """``/api/v1/<path>`` (queries as a POST form, as Grafana sends them); returns the
        whole answer."""
        url = f"{self.url}/api/v1/{path}"
        answer = (self.http.post(url, data=params, timeout=30) if method == "POST"
                  else self.http.get(url, params=params, timeout=30))
        assert answer.status_code == 200, f"{path} {params}: {answer.status_code} {answer.text}"
        body = answer.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body

    def instant(self, expr: str) -> list:
        return self.api("query", query=expr, time=f"{time.time():.3f}")["data"]["result"]

    def range(self, expr: str, seconds: int = 600, step: int = 15) -> list:
        end = time.time()
        return self.api("query_range", query=expr, start=f"{end - seconds:.3f}",
                        end=f"{end:.3f}", step=str(step))["data"]["result"]


# A test-only rule, so ALERTS{alertstate="firing"} has something to show: the real rules are
# another module's business (and tested by promtool there).
TEST_RULES = {"groups": [{"name": "grafana-tests", "rules": [{
    "alert": "CarnilGrafanaTestLimitInUse",
    "expr": "max by (customer, feature) (carnil_usage_limit_utilization_ratio) > 0",
    "labels": {"severity": "info"},
    "annotations": {"summary": "A limit is in use (test rule)."},
}]}]}


def fresh_events(prefix: str) -> list[dict]:
    """Events of now for ``CUSTOMER``: limits, rates and the last hour of history get data."""
    events = []
    for index in range(3):
        events += [
            {"type": "usage", "id": f"{prefix}-api-{index}", "customer_id": CUSTOMER,
             "feature_id": "api_calls", "usage": 250 + index},
            {"type": "usage", "id": f"{prefix}-msg-{index}", "customer_id": CUSTOMER,
             "feature_id": "messages", "usage": 4},
            {"type": "ai_usage", "id": f"{prefix}-gpt-{index}", "customer_id": CUSTOMER,
             "model_id": "gpt-4o", "input_tokens": 1200, "output_tokens": 300,
             "cached_tokens": 200},
            {"type": "ai_usage", "id": f"{prefix}-claude-{index}", "customer_id": CUSTOMER,
             "model_id": "claude-sonnet-4", "tokens": 900, "cost": 0.02},
        ]
    return events


class Traffic:
    """The exporter under test, what it recorded, and the mirror it feeds."""

    def __init__(self, server, influxd: Influxd, recorded: int):
        self.server, self.influxd, self.recorded = server, influxd, recorded

    def send(self, prefix: str) -> None:
        """Fresh events of every outcome: accepted, duplicate (sent twice), rejected."""
        batch = fresh_events(prefix)
        answer = self.server.post("/v1/events", json=batch)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"accepted": len(batch), "duplicates": 0}, answer.text
        self.recorded += len(batch)
        again = self.server.post("/v1/events", json=batch)
        assert again.json() == {"accepted": 0, "duplicates": len(batch)}, again.text
        bad = self.server.post("/v1/events", json=[{
            "type": "usage", "customer_id": CUSTOMER, "feature_id": "api_calls", "usage": -1}])
        assert bad.status_code == 400, bad.text

    def points(self) -> int:
        return self.influxd.count("usage", "quantity") + self.influxd.count("ai_usage", "tokens")

    def wait_mirrored(self) -> None:
        wait_for(lambda: self.points() >= self.recorded, DATA_TIMEOUT,
                 lambda: f"{self.recorded} points in influxd, found {self.points()} (server "
                         f"log:\n{self.server.stderr_text()[-3000:]})")
        assert self.points() == self.recorded, "the mirror wrote a point twice"


@pytest.fixture(scope="module")
def influxd(tmp_path_factory) -> Iterator[Influxd]:
    with running(Influxd(tmp_path_factory.mktemp("influxd"))) as server:
        server.query('CREATE DATABASE "carnil"', method="POST")
        yield server


@pytest.fixture(scope="module")
def traffic(tmp_path_factory, influxd) -> Iterator[Traffic]:
    """``serve`` filled by ``demo``, plus fresh events and a credit of ``CUSTOMER``, mirrored
    into ``influxd``."""
    config = {
        "auth": {"metrics_key": METRICS_KEY},
        "cache": {"ttl": 0.5},
        "influxdb": {"enabled": True, "api": "v1", "url": influxd.url, "database": "carnil",
                     "flush_interval_seconds": 0.2},
    }
    with running_server(tmp_path_factory.mktemp("serve"), config) as server:
        demo = run_cli(server.config_path, "demo", "--no-progress", timeout=300)
        assert demo.returncode == 0, demo.stderr
        traffic = Traffic(server, influxd,
                          int(re.search(r"recorded (\d+) events", demo.stdout).group(1)))
        traffic.send("early")
        credit = server.post(f"/v1/customers/{CUSTOMER}/features/messages/credits",
                             json={"amount": 1000, "reason": "grafana tests"})
        assert credit.status_code == 200, credit.text
        traffic.wait_mirrored()
        yield traffic


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, traffic) -> Iterator[Prometheus]:
    """Prometheus scraping the exporter; more traffic arrives once it has scraped a few times,
    so counters have increased within the last minute when the queries run."""
    directory = tmp_path_factory.mktemp("prometheus")
    rules = directory / "rules.yml"
    rules.write_text(yaml.safe_dump(TEST_RULES))
    key_file = directory / "carnil-metrics-key"
    key_file.write_text(METRICS_KEY + "\n")
    target = traffic.server.url.removeprefix("http://")
    with running(Prometheus(directory, target, key_file, rules)) as server:
        def has(expr: str) -> Callable[[], bool]:
            return lambda: bool(server.instant(expr))

        def why() -> str:
            return (f"targets: {server.api('targets', 'GET')['data']}\n{server.log()}")

        wait_for(has(f'count_over_time(carnil_up{{job="{JOB}"}}[1m]) >= 3'), DATA_TIMEOUT,
                 lambda: f"3 scrapes of the exporter; {why()}")
        traffic.send("late")
        traffic.wait_mirrored()
        for expr in [f'count_over_time(carnil_up{{job="{JOB}"}}[1m]) >= 6',
                     f'increase(carnil_usage_total{{customer="{CUSTOMER}"}}[1m]) > 0',
                     f'increase(carnil_ai_cost_total{{customer="{CUSTOMER}"}}[1m]) > 0',
                     "increase(carnil_influx_points_written_total[1m]) > 0",
                     'increase(carnil_events_ingested_total{outcome="rejected"}[1m]) > 0',
                     'ALERTS{alertstate="firing"}']:
            wait_for(has(expr), DATA_TIMEOUT, lambda expr=expr: f"{expr}; {why()}")
        yield server


# ------------------------------------------------------------------------------ interpolation


def _regex_escape(value: str) -> str:
    return re.sub(r"([\\^$.|?*+()\[\]{}/])", r"\\\1", value)


def interpolate(text: str, dashboard: dict, selection: dict, kind: str) -> str:
    """``text`` with variables and macros replaced as Grafana does for datasource ``kind``:
    All → the variable's allValue; several values → ``a|b`` (Prometheus) or ``(a|b)``
    (InfluxDB), regex-escaped; one value of a multi-value variable → escaped; else raw."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}

    def value_of(name: str) -> str:
        if name == "timeFilter":  # as Grafana writes it for the last hour
            end_ms = int(time.time() * 1000)
            return f"time >= {end_ms - 3_600_000}ms and time <= {end_ms}ms"
        if name in MACROS:
            return MACROS[name]
        variable, chosen = variables[name], selection[name]
        if chosen is ALL:
            return variable["allValue"]
        if isinstance(chosen, list):
            escaped = [_regex_escape(v) for v in chosen]
            if len(escaped) == 1:
                return escaped[0]
            joined = "|".join(escaped)
            return f"({joined})" if kind == "influxdb" else joined
        return chosen

    def replace(match: re.Match) -> str:
        return value_of(next(g for g in match.groups() if g))

    filled = VARIABLE_REFERENCE.sub(replace, text)
    assert not re.search(r"\$(\w|\{)", filled), f"unfilled variable in {filled!r}"
    return filled


def run_label_values(prometheus: Prometheus, query: str) -> list[str]:
    """Grafana's ``label_values(selector, label)`` through Prometheus' label values API."""
    match = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", query.strip())
    assert match, f"not a label_values() query: {query!r}"
    selector, label = match.groups()
    params = {"match[]": selector} if selector else {}
    answer = prometheus.http.get(f"{prometheus.url}/api/v1/label/{label}/values",
                                 params=params, timeout=30)
    assert answer.status_code == 200, f"{query}: {answer.status_code} {answer.text}"
    body = answer.json()
    assert body["status"] == "success", body
    return body["data"]


# ------------------------------------------------------------------------------ queries


def test_variable_queries_list_the_data(prometheus):
    for name, dashboard in committed().items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            query = interpolate(variable_query(variable), dashboard, SCENARIOS["all"],
                                "prometheus")
            values = run_label_values(prometheus, query)
            wanted = SCENARIOS["all"][variable["name"]]
            wanted = SCENARIOS["two"][variable["name"]] if wanted is ALL else [wanted]
            assert set(wanted) <= set(values), f"{name}: {variable['name']} {query}: {values}"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_promql_query_runs_on_prometheus(prometheus, scenario):
    empty = []
    ran = 0
    for name, dashboard in committed().items():
        for panel, target in targets(dashboard):
            if target["datasource"]["type"] != "prometheus":
                continue
            expr = interpolate(target["expr"], dashboard, SCENARIOS[scenario], "prometheus")
            result = prometheus.instant(expr) if target["instant"] else prometheus.range(expr)
            ran += 1
            if not result:
                empty.append(f"{name}: {panel['title']} {target['refId']}: {expr}")
    assert ran >= 30
    if scenario == "all":  # everything selected: every panel has data
        assert not empty, "queries without data:\n" + "\n".join(empty)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_influxql_query_runs_on_influxdb(influxd, traffic, scenario):
    empty = []
    ran = 0
    for name, dashboard in committed().items():
        for panel, target in targets(dashboard):
            if target["datasource"]["type"] != "influxdb":
                continue
            query = interpolate(target["query"], dashboard, SCENARIOS[scenario], "influxdb")
            results = influxd.query(query)
            assert len(results) == 1, f"{name}: {panel['title']}: {results}"
            assert "error" not in results[0], (
                f"{name}: {panel['title']}: {query}: {results[0]['error']}")
            ran += 1
            if not results[0].get("series"):
                empty.append(f"{name}: {panel['title']} {target['refId']}: {query}")
    assert ran >= 15
    if scenario == "all":
        assert not empty, "queries without data:\n" + "\n".join(empty)


def test_core_panels_show_the_data_the_test_created(prometheus, influxd):
    """Not just "some data": the values the fresh events, limits and credits produce."""
    dashboards = committed()
    selection = SCENARIOS["all"]

    def target(dashboard: str, title: str, ref: str = "A") -> tuple[dict, dict]:
        panel = next(p for p in query_panels(dashboards[dashboard]) if p["title"] == title)
        return dashboards[dashboard], next(t for t in panel["targets"] if t["refId"] == ref)

    def influx(dashboard: str, title: str, ref: str = "A") -> list[tuple[dict, str, list]]:
        """(tags, measurement, row) of every row the query returns."""
        model, query = target(dashboard, title, ref)
        results = influxd.query(interpolate(query["query"], model, selection, "influxdb"))
        return [(s.get("tags") or {}, s["name"], row)
                for s in results[0]["series"] for row in s["values"]]

    def prom(dashboard: str, title: str, label: str, ref: str = "A") -> dict[str, float]:
        """The query's instant values by ``label``."""
        model, query = target(dashboard, title, ref)
        result = prometheus.instant(interpolate(query["expr"], model, selection, "prometheus"))
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}

    customer = "customer-usage.json"
    # InfluxDB: history and period totals
    (_, _, (_, total_usage)), = influx(customer, "Total usage")
    assert total_usage >= 2 * 3 * (250 + 4)  # the fresh events, besides the demo's month
    assert {m for _, m, _ in influx(customer, "Total cost")} == {"usage", "ai_usage"}
    per_feature: dict[str, float] = {}
    for tags, _, (_, quantity) in influx(customer, "Usage over time"):
        per_feature[tags["feature"]] = per_feature.get(tags["feature"], 0) + quantity
    assert per_feature["api_calls"] >= 2 * 753 and per_feature["messages"] >= 2 * 12
    tokens = {tags["model"] for tags, _, (_, count) in influx(customer, "Tokens by model")
              if count > 0}
    assert tokens >= {"gpt-4o", "claude-sonnet-4"}
    # Prometheus: meters, limits, credits, live rates
    utilization = prom(customer, "Current usage vs limit", "feature")
    assert 0 < utilization["api_calls"] < 1 and 0 < utilization["ai_cost"] < 1  # demo limits
    # credited after the early events: only the late ones (3 × 4 messages) are debited
    assert prom(customer, "Credit balance", "feature")["messages"] == 1000 - 12
    assert prom(customer, "Usage rate", "feature")["api_calls"] > 0
    assert prom(customer, "Usage per minute (live)", "feature")["api_calls"] > 0
    assert prom(customer, "Tokens per minute (live)", "model")["gpt-4o"] > 0
    fleet = "fleet-overview.json"
    assert prom(fleet, "Top customers by cost", "customer")[CUSTOMER] > 0
    assert prom(fleet, "Forecast limit exhaustion", "feature")["api_calls"] > 0
    assert prom(fleet, "Customers", "") == {"": 5}
    assert prom(fleet, "Alerts firing", "")[""] >= 1
    health = "exporter-health.json"
    assert prom(health, "Exporter up", "") == {"": 1}
    assert prom(health, "InfluxDB points and errors", "")[""] > 0
    ingested = prometheus.instant(interpolate(
        target(health, "Events ingested by outcome")[1]["expr"], dashboards[health], selection,
        "prometheus"))
    assert {r["metric"]["outcome"] for r in ingested} == {"accepted", "duplicate", "rejected"}


def test_every_metric_a_panel_names_is_exposed(prometheus):
    exposed = set(prometheus.api("label/__name__/values", "GET")["data"])
    named = set()
    for dashboard in committed().values():
        texts = [target_text(t) for _, t in targets(dashboard)
                 if t["datasource"]["type"] == "prometheus"]
        texts += [q for v in dashboard["templating"]["list"] if (q := variable_query(v))]
        for text in texts:
            named |= set(re.findall(r"\b(carnil_[a-z0-9_]+)\b", text))
            named |= set(re.findall(r"\b(ALERTS|up)\s*\{", text))
    assert len(named) >= 20
    assert named <= exposed, f"not exposed: {sorted(named - exposed)}"
