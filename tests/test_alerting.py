"""Alerting as shipped (SPEC §7): the generated rules, promtool's checks and unit tests, the
Prometheus and Alertmanager configs, the runbook — and those configs run by real servers.

Needs promtool, prometheus, amtool and prometheus-alertmanager (Debian packages ``prometheus``
and ``prometheus-alertmanager``). Without them these tests fail with what to install; they
never skip.
"""

from __future__ import annotations

import copy
import json
import queue
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from carnil_analytics.metrics.families import EXPORTER, business
from carnil_analytics.metrics.service import ServiceMetrics

from monitoring import (
    ALERTMANAGER_CONFIG,
    HTTP,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    ROOT,
    RULES,
    RUNBOOK,
    build_rules,
    promtool_check_config,
    running_binary,
    tool,
)
from servers import HOST, free_port, running_server

RULE_TESTS = PROMETHEUS_DIR / "tests" / "carnil.rules.test.yml"
RUNBOOK_URL = "https://github.com/carnil/carnil-analytics/blob/main/docs/runbook.md"

SPEC_ALERTS = {
    "CarnilUsageLimitNearlyReached", "CarnilUsageLimitReached",
    "CarnilUsageLimitExhaustionForecast", "CarnilCreditBalanceLow",
    "CarnilCreditBalanceExhausted", "CarnilUsageSpike", "CarnilAISpendSpike",
    "CarnilExporterDown", "CarnilInfluxOutboxBacklog", "CarnilInfluxWriteFailing",
}
SEVERITIES = {"critical", "warning", "info"}
RECEIVERS = {"critical": "pager", "warning": "default", "info": "low-priority"}
WAIT_SECONDS = 30.0


def run(*args: str | Path, cwd: Path = ROOT) -> str:
    """Run a command to completion; fail with its output unless it exits 0."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(map(str, args))} exited {done.returncode}:\n{output}"
    return output


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


ALERTS = {rule["alert"]: rule for rule in rules() if "alert" in rule}
RECORDED = [rule["record"] for rule in rules() if "record" in rule]


def seconds(duration: str) -> int:
    """A Prometheus duration such as ``1h11m`` in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    parts = re.findall(r"(\d+)([smhdw])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page (outside code blocks)."""
    anchors, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6}\s+(.*)", line)):
            text = heading.group(1).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


# -- the rules --------------------------------------------------------------------------------


def test_committed_rules_are_the_generator_output():
    assert RULES.read_text(encoding="utf-8") == build_rules().render(), (
        "provisioning/prometheus/rules/carnil.rules.yml is not build_rules.py's output: "
        "change THRESHOLDS in build_rules.py and run it")


def test_generator_check_mode_agrees():
    """What CI or a pre-commit hook runs: ``build_rules.py --check`` in a fresh interpreter."""
    run(sys.executable, PROMETHEUS_DIR / "build_rules.py", "--check")


def test_thresholds_table_covers_every_alert():
    thresholds = build_rules().THRESHOLDS
    assert set(thresholds) == set(ALERTS)
    for name, alert in ALERTS.items():
        assert alert["for"] == thresholds[name]["for"], name
        assert alert["labels"]["severity"] == thresholds[name]["severity"], name


def test_promtool_check_rules():
    output = run(tool("promtool"), "check", "rules", RULES)
    assert f"SUCCESS: {len(ALERTS) + len(RECORDED)} rules found" in output


def test_promtool_unit_tests_pass():
    output = run(tool("promtool"), "test", "rules", RULE_TESTS.relative_to(PROMETHEUS_DIR),
                 cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in output


def test_every_alert_of_the_spec_exists():
    assert set(ALERTS) >= SPEC_ALERTS, f"missing: {sorted(SPEC_ALERTS - set(ALERTS))}"


def test_alert_and_record_names_follow_the_conventions():
    for name in ALERTS:
        assert re.fullmatch(r"Carnil(?:[A-Z][A-Za-z0-9]*)+", name), name
    for name in RECORDED:  # level:metric:operation
        assert re.fullmatch(r"[a-z_]+:carnil_[a-z_]+:[a-z0-9_]+", name), name
    assert len(set(RECORDED)) == len(RECORDED)


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_is_labelled_and_annotated(name):
    alert = ALERTS[name]
    assert alert["labels"]["severity"] in SEVERITIES
    assert seconds(alert["for"]) > 0
    annotations = alert["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert "{{" not in annotations["summary"], "the summary is fixed, the description templated"
    description = annotations["description"]
    assert "$value" in description or name == "CarnilExporterDown"
    if "customer" in alert["expr"]:  # a customer's alert names the customer and what
        assert "{{ $labels.customer }}" in description
        assert "{{ $labels.feature }}" in description or "{{ $labels.model }}" in description
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{name.lower()}"


def test_every_runbook_url_has_its_section():
    anchors = github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    for name, alert in ALERTS.items():
        anchor = alert["annotations"]["runbook_url"].partition("#")[2]
        assert anchor in anchors, f"docs/runbook.md has no section #{anchor} for {name}"


def test_rules_read_only_metrics_the_exporter_exposes():
    exposed = {"up"}
    for family in [*business("EUR").values(), *EXPORTER.values()]:
        exposed.add(family.name + ("_total" if family.kind == "counter" else ""))
    for metric in ServiceMetrics().registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        exposed |= {metric.name + suffix for suffix in suffixes.get(metric.type, ("",))}
    for rule in rules():
        names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", rule["expr"]))
        metrics = {n for n in names if n.startswith("carnil_") or n == "up"}
        assert metrics <= exposed, f"{rule.get('alert') or rule['record']}: {metrics - exposed}"
        for recorded in {n for n in names if ":" in n}:
            assert recorded in RECORDED, recorded


# -- the promtool unit tests ------------------------------------------------------------------


def rule_tests() -> dict:
    return load_yaml(RULE_TESTS)


def test_unit_tests_evaluate_every_group_in_order():
    groups = [group["name"] for group in load_yaml(RULES)["groups"]]
    assert sorted(rule_tests()["group_eval_order"]) == sorted(groups)


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_is_tested_just_before_and_after_its_for(name):
    """A case one evaluation before the alert fires (none) and one at it (exact labels and
    every annotation expanded), in the same test group."""
    suite = rule_tests()
    interval = seconds(suite["evaluation_interval"])
    alert = ALERTS[name]
    pairs = []
    for group in suite["tests"]:
        cases = [c for c in group.get("alert_rule_test", []) if c["alertname"] == name]
        silent = {seconds(c["eval_time"]) for c in cases if not c.get("exp_alerts")}
        for case in cases:
            fired = case.get("exp_alerts")
            if fired and seconds(case["eval_time"]) - interval in silent:
                pairs.append(fired)
    assert pairs, f"no promtool case of {name} just before and just after its for:"
    for fired in pairs:
        for expected in fired:
            assert expected["exp_labels"]["severity"] == alert["labels"]["severity"]
            annotations = expected["exp_annotations"]
            assert set(annotations) == {"summary", "description", "runbook_url"}
            assert annotations["summary"] == alert["annotations"]["summary"]
            assert annotations["runbook_url"] == alert["annotations"]["runbook_url"]
            assert "{{" not in annotations["description"]


def test_every_recording_rule_has_a_value_test():
    tested = {case["expr"] for group in rule_tests()["tests"]
              for case in group.get("promql_expr_test", []) if case.get("exp_samples")}
    assert set(RECORDED) <= tested, f"untested: {sorted(set(RECORDED) - tested)}"


# -- Prometheus config ------------------------------------------------------------------------


def prometheus_config() -> dict:
    return load_yaml(PROMETHEUS_CONFIG)


def test_prometheus_config_scrapes_the_exporter_with_its_key():
    config = prometheus_config()
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["rules/carnil.rules.yml"]
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    [carnil] = [job for job in config["scrape_configs"] if job["job_name"] == "carnil"]
    assert carnil["static_configs"][0]["targets"] == ["exporter:8080"]
    assert carnil["authorization"] == {
        "type": "Bearer", "credentials_file": "/etc/prometheus/secrets/carnil-metrics-key"}


def test_promtool_check_config_syntax():
    """The committed file as is; --syntax-only because its key file only exists in the stack."""
    run(tool("promtool"), "check", "config", "--syntax-only", PROMETHEUS_CONFIG)


def test_promtool_check_config_with_files(tmp_path):
    output = promtool_check_config(PROMETHEUS_CONFIG, tmp_path)
    assert f"SUCCESS: {len(ALERTS) + len(RECORDED)} rules found" in output


# -- Alertmanager config ----------------------------------------------------------------------


def test_amtool_check_config():
    """The committed file as is (amtool does not open the credentials files)."""
    output = run(tool("amtool"), "check-config", ALERTMANAGER_CONFIG)
    assert "SUCCESS" in output


def test_alertmanager_config_holds_no_secret():
    config = load_yaml(ALERTMANAGER_CONFIG)
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            authorization = webhook["http_config"]["authorization"]
            assert "credentials" not in authorization
            assert authorization["credentials_file"].startswith("/etc/alertmanager/secrets/")
    assert config["route"]["group_by"] == ["alertname", "customer", "feature"]


@pytest.mark.parametrize("severity", sorted(RECEIVERS))
def test_alerts_route_by_severity(severity):
    output = run(tool("amtool"), "config", "routes", "test",
                 f"--config.file={ALERTMANAGER_CONFIG}", f"severity={severity}",
                 "alertname=CarnilUsageLimitReached", "customer=acme", "feature=api_calls")
    assert output.split()[0] == RECEIVERS[severity]


# -- the real servers -------------------------------------------------------------------------


def wait_for(check, what: str):
    """Poll ``check()`` until it returns something truthy; fail after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


class Webhooks:
    """A loopback HTTP server that records every notification Alertmanager posts to it."""

    def __init__(self):
        received: queue.Queue = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.put((self.path, self.headers.get("Authorization"), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.received = received
        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhooks:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def drain(self) -> list[tuple[str, str, dict]]:
        items = []
        while not self.received.empty():
            items.append(self.received.get_nowait())
        return items


def alertmanager_copy(tmp_path: Path, webhooks: Webhooks) -> tuple[Path, str]:
    """The committed config with the webhooks on loopback, the token file in ``tmp_path`` and
    the group waits shortened; everything else (routes, inhibitions) as committed."""
    token = "test-webhook-token"
    token_file = tmp_path / "webhook-token"
    token_file.write_text(token + "\n")
    config = copy.deepcopy(load_yaml(ALERTMANAGER_CONFIG))
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            path = webhook["url"].split("/", 3)[3]
            webhook["url"] = f"{webhooks.url}/{path}"
            webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        route["group_wait"] = "1s"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, token


def test_alertmanager_inhibits_and_routes(tmp_path):
    binary = tool("prometheus-alertmanager", "alertmanager")
    with Webhooks() as webhooks:
        config, token = alertmanager_copy(tmp_path, webhooks)
        port = free_port()
        url = f"http://{HOST}:{port}"
        with running_binary([binary, f"--config.file={config}",
                             f"--storage.path={tmp_path / 'data'}",
                             f"--web.listen-address={HOST}:{port}", "--cluster.listen-address="],
                            f"{url}/-/ready", tmp_path / "alertmanager.log"):

            def alert(name, severity, customer, feature):
                return {"labels": {"alertname": name, "severity": severity,
                                   "customer": customer, "feature": feature},
                        "annotations": {"summary": name}}

            sent = [
                alert("CarnilUsageLimitReached", "critical", "acme", "api_calls"),
                alert("CarnilUsageLimitNearlyReached", "warning", "acme", "api_calls"),
                alert("CarnilUsageLimitNearlyReached", "warning", "acme", "sms"),
                alert("CarnilCreditBalanceExhausted", "critical", "globex", "ai_cost"),
                alert("CarnilCreditBalanceLow", "warning", "globex", "ai_cost"),
                alert("CarnilUsageSpike", "info", "initech", "api_calls"),
            ]
            assert HTTP.post(f"{url}/api/v2/alerts", json=sent, timeout=5).status_code == 200

            def states():
                alerts = HTTP.get(f"{url}/api/v2/alerts", timeout=5).json()
                found = {(a["labels"]["alertname"], a["labels"]["customer"],
                          a["labels"]["feature"]): a["status"]["state"] for a in alerts}
                return found if len(found) == len(sent) else None

            def settled():
                found = states()
                suppressed = ("CarnilUsageLimitNearlyReached", "acme", "api_calls")
                return found if found and found[suppressed] == "suppressed" else None

            assert wait_for(settled, "the inhibition") == {
                ("CarnilUsageLimitReached", "acme", "api_calls"): "active",
                ("CarnilUsageLimitNearlyReached", "acme", "api_calls"): "suppressed",
                ("CarnilUsageLimitNearlyReached", "acme", "sms"): "active",
                ("CarnilCreditBalanceExhausted", "globex", "ai_cost"): "active",
                ("CarnilCreditBalanceLow", "globex", "ai_cost"): "suppressed",
                ("CarnilUsageSpike", "initech", "api_calls"): "active",
            }

            delivered: list[tuple[str, str, dict]] = []

            def notified():
                delivered.extend(webhooks.drain())
                return len(delivered) >= 4
            wait_for(notified, "four notifications")
            time.sleep(2)  # an inhibited alert would have been sent with the others by now
            delivered.extend(webhooks.drain())
    got = sorted((path, alert["labels"]["alertname"], alert["labels"]["customer"],
                  alert["labels"]["feature"])
                 for path, _, body in delivered for alert in body["alerts"])
    assert got == [
        ("/default", "CarnilUsageLimitNearlyReached", "acme", "sms"),
        ("/low-priority", "CarnilUsageSpike", "initech", "api_calls"),
        ("/pager", "CarnilCreditBalanceExhausted", "globex", "ai_cost"),
        ("/pager", "CarnilUsageLimitReached", "acme", "api_calls"),
    ]
    assert {authorization for _, authorization, _ in delivered} == {f"Bearer {token}"}


def test_prometheus_scrapes_the_exporter_and_evaluates_the_rules(tmp_path):
    """The committed Prometheus config (job, key file, rules) against the real service, with
    only the addresses, the key file and the intervals changed."""
    binary = tool("prometheus")
    exporter_dir = tmp_path / "exporter"
    exporter_dir.mkdir()
    with running_server(exporter_dir) as server:
        answer = server.post("/v1/keys", json={"role": "metrics"})
        assert answer.status_code in (200, 201), answer.text
        key_file = tmp_path / "carnil-metrics-key"
        key_file.write_text(answer.json()["key"] + "\n")
        limit = server.put("/v1/customers/acme/features/api_calls/limit",
                           json={"limit": 100, "period": "monthly"})
        assert limit.status_code == 200, limit.text
        usage = server.post("/v1/usage", json={"customer_id": "acme",
                                               "feature_id": "api_calls", "usage": 90})
        assert usage.status_code == 200, usage.text

        config = prometheus_config()
        config["global"] |= {"scrape_interval": "1s", "scrape_timeout": "1s",
                             "evaluation_interval": "1s"}
        config["rule_files"] = [str(PROMETHEUS_DIR / path) for path in config["rule_files"]]
        del config["alerting"]
        [carnil] = [job for job in config["scrape_configs"] if job["job_name"] == "carnil"]
        carnil["static_configs"] = [{"targets": [f"{HOST}:{server.port}"]}]
        carnil["authorization"]["credentials_file"] = str(key_file)
        config["scrape_configs"] = [carnil]
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))

        port = free_port()
        url = f"http://{HOST}:{port}"
        with running_binary([binary, f"--config.file={config_path}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address={HOST}:{port}"],
                            f"{url}/-/ready", tmp_path / "prometheus.log"):

            def query(expr):
                answer = HTTP.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
                return answer.json()["data"]["result"]

            def value(expr):
                result = query(expr)
                return float(result[0]["value"][1]) if len(result) == 1 else None

            assert wait_for(lambda: value('up{job="carnil"}') == 1, "the scrape")
            assert value('carnil_up{job="carnil"}') == 1
            meter = '{customer="acme",feature="api_calls"}'
            wait_for(lambda: value(f"customer_feature:carnil_usage_limit_utilization_ratio:max"
                                   f"{meter}") == 0.9, "the recorded utilization")

            def pending():
                alerts = query(f'ALERTS{{alertstate="pending",{meter[1:]}')
                found = {(a["metric"]["alertname"], a["metric"]["severity"]) for a in alerts}
                return found if len(found) >= 2 else None

            # The first evaluation may predate the first scrape: only acme's alerts matter here.
            assert wait_for(pending, "the limit alerts") == {
                ("CarnilUsageLimitNearlyReached", "warning"),
                ("CarnilUsageLimitExhaustionForecast", "warning"),
            }
