"""Alert delivery end to end: a real ``serve`` scraped with a ``metrics`` key by a real
Prometheus that evaluates the project's own rules, a real Alertmanager on a config derived
from the project's, and a loopback webhook that records every notification.

What is changed from what ships, and nothing else:

* the rules are ``build_rules.py``'s output with every ``for:`` scaled from minutes to seconds
  (5m -> 5s, 1m -> 1s); the test checks they otherwise equal the committed rules;
* Prometheus: the committed config with 1 s intervals, the carnil job's target and key file on
  loopback, Alertmanager on loopback and the other jobs dropped;
* Alertmanager: the committed config with the webhook URLs on the test's receiver, the token
  file in a temp dir, and group_wait, group_interval and repeat_interval at 1 s.

Needs prometheus and prometheus-alertmanager (Debian packages of those names); without them
this test fails with what to install, it never skips.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from monitoring import (
    ALERTMANAGER_CONFIG,
    HTTP,
    PROMETHEUS_CONFIG,
    RULES,
    RUNBOOK,
    build_rules,
    running_binary,
    tool,
)
from servers import HOST, free_port, running_server

WAIT_SECONDS = 20.0  # each wait; the whole module normally takes about 25 s
TIMERS = ("group_wait", "group_interval", "repeat_interval")


# -- helpers ----------------------------------------------------------------------------------


def seconds_for_minutes(duration: str) -> str:
    """Every shipped ``for:`` is in minutes; the test waits as many seconds."""
    match = re.fullmatch(r"(\d+)m", duration)
    assert match, f"unexpected for: {duration!r} (this test scales minutes to seconds)"
    return f"{match.group(1)}s"


def without_for(document: dict) -> dict:
    document = copy.deepcopy(document)
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    return document


def render_short_rules(tmp_path: Path, module) -> Path:
    for row in module.THRESHOLDS.values():
        row["for"] = seconds_for_minutes(row["for"])
    text = module.render()
    shipped = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert without_for(yaml.safe_load(text)) == without_for(shipped), (
        "the rules under test must be the committed ones but for their for: durations")
    path = tmp_path / "carnil.rules.yml"
    path.write_text(text, encoding="utf-8")
    return path


def prometheus_config(tmp_path: Path, rules: Path, target: str, key_file: Path,
                      alertmanager: str) -> Path:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    config["global"] |= {"scrape_interval": "1s", "scrape_timeout": "1s",
                         "evaluation_interval": "1s"}
    config["rule_files"] = [str(rules)]
    [managers] = config["alerting"]["alertmanagers"]
    managers["static_configs"] = [{"targets": [alertmanager]}]
    # CarnilExporterDown selects job="carnil": the job of the committed config, kept as is.
    [carnil] = [job for job in config["scrape_configs"] if job["job_name"] == "carnil"]
    carnil["static_configs"] = [{"targets": [target]}]
    carnil["authorization"]["credentials_file"] = str(key_file)
    config["scrape_configs"] = [carnil]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def alertmanager_config(tmp_path: Path, webhook_url: str, token_file: Path) -> Path:
    """Routes, receivers and inhibitions as committed; only where the webhooks and the token
    are, and the timers, changed."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = webhook_url + urlsplit(webhook["url"]).path
            webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    root = config["route"]
    for route in [root, *root.get("routes", [])]:
        for timer in TIMERS:
            if route is root or timer in route:
                route[timer] = "1s"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Notification:
    at: float  # time.monotonic() when it arrived
    path: str
    authorization: str | None
    body: dict


class Webhook:
    """A loopback HTTP server that records every POST (path, Authorization header, body)."""

    def __init__(self):
        self.received: list[Notification] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    received.append(Notification(time.monotonic(), self.path,
                                                 self.headers.get("Authorization"),
                                                 json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._lock = lock
        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self) -> list[tuple[Notification, dict]]:
        """Every alert of every notification so far, with the notification it came in."""
        with self._lock:
            notes = list(self.received)
        return [(note, alert) for note in notes for alert in note.body.get("alerts", [])]

    def find(self, alertname: str, status: str | None = "firing", after: float = 0.0,
             **labels: str) -> list[tuple[Notification, dict]]:
        return [(note, alert) for note, alert in self.alerts()
                if alert["labels"].get("alertname") == alertname and note.at >= after
                and (status is None or alert["status"] == status)
                and all(alert["labels"].get(k) == v for k, v in labels.items())]


def runbook_anchors() -> set[str]:
    return {line[3:].strip().lower() for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
            if line.startswith("## ")}


# -- the test ---------------------------------------------------------------------------------


def test_shipped_alerts_reach_the_webhook(tmp_path):
    prometheus = tool("prometheus")
    alertmanager = tool("prometheus-alertmanager", "alertmanager")
    module = build_rules("build_rules_e2e")
    shipped_alerts = {rule["alert"]: rule for group in module.rules()["groups"]
                      for rule in group["rules"] if "alert" in rule}
    rules = render_short_rules(tmp_path, module)

    metrics_key = f"carnil-metrics-{secrets.token_urlsafe(24)}"
    key_file = tmp_path / "carnil-metrics-key"
    key_file.write_text(metrics_key + "\n")
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "webhook-token"
    token_file.write_text(token + "\n")
    exporter_dir = tmp_path / "exporter"
    exporter_dir.mkdir()
    am_port, prom_port = free_port(), free_port()
    am_url, prom_url = f"http://{HOST}:{am_port}", f"http://{HOST}:{prom_port}"

    with contextlib.ExitStack() as stack:
        webhook = stack.enter_context(Webhook())
        # A short cache so a scrape sees new usage within a second (it is 5 s by default).
        server = stack.enter_context(running_server(
            exporter_dir, {"auth": {"metrics_key": metrics_key}, "cache": {"ttl": 1}}))
        am_config = alertmanager_config(tmp_path, webhook.url, token_file)
        stack.enter_context(running_binary(
            [alertmanager, f"--config.file={am_config}",
             f"--storage.path={tmp_path / 'alertmanager-data'}",
             f"--web.listen-address={HOST}:{am_port}", "--cluster.listen-address="],
            f"{am_url}/-/ready", tmp_path / "alertmanager.log"))
        target = f"{HOST}:{server.port}"
        config = prometheus_config(tmp_path, rules, target, key_file, f"{HOST}:{am_port}")
        stack.enter_context(running_binary(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address={HOST}:{prom_port}"],
            f"{prom_url}/-/ready", tmp_path / "prometheus.log"))

        def diagnosis() -> str:
            delivered = [(n.path, a["status"], a["labels"]) for n, a in webhook.alerts()]
            with contextlib.suppress(requests.RequestException, ValueError):
                managed = [(a["labels"], a["status"]["state"])
                           for a in HTTP.get(f"{am_url}/api/v2/alerts", timeout=5).json()]
                evaluated = [(a["labels"], a["state"]) for a in HTTP.get(
                    f"{prom_url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]]
                return (f"delivered: {delivered}\nalertmanager: {managed}\n"
                        f"prometheus: {evaluated}")
            return f"delivered: {delivered}"

        def wait_for(check: Callable, what: str):
            deadline = time.monotonic() + WAIT_SECONDS
            while not (result := check()):
                if time.monotonic() > deadline:
                    pytest.fail(f"no {what} within {WAIT_SECONDS} s\n{diagnosis()}",
                                pytrace=False)
                time.sleep(0.2)
            return result

        def value(expr: str) -> float | None:
            answer = HTTP.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=5)
            result = answer.json()["data"]["result"]
            return float(result[0]["value"][1]) if len(result) == 1 else None

        wait_for(lambda: value('up{job="carnil"}') == 1 and value("carnil_up") == 1,
                 "scrape of serve with the metrics key from the file")

        # Over a limit; nearly at a limit (the control of the inhibition); out of credits.
        for feature, used in (("api_calls", 12), ("sms", 9)):
            answer = server.put(f"/v1/customers/acme/features/{feature}/limit",
                                json={"limit": 10, "period": "monthly"})
            assert answer.status_code == 200, answer.text
            answer = server.post("/v1/usage", json={"customer_id": "acme",
                                                    "feature_id": feature, "usage": used})
            assert answer.status_code == 200, answer.text
        answer = server.post("/v1/customers/globex/features/api_calls/credits",
                             json={"amount": 5, "reason": "e2e"})
        assert answer.status_code in (200, 201), answer.text
        answer = server.post("/v1/usage", json={"customer_id": "globex",
                                                "feature_id": "api_calls", "usage": 6})
        assert answer.status_code == 200, answer.text

        def check_page(note: Notification, alert: dict, name: str, labels: dict) -> None:
            assert note.path == "/pager", f"{name} went to {note.path}, not the pager"
            assert note.authorization == f"Bearer {token}"
            assert note.body["receiver"] == "pager"
            assert alert["labels"] == {"alertname": name, "severity": "critical", **labels}
            annotations = alert["annotations"]
            assert annotations["summary"] == shipped_alerts[name]["annotations"]["summary"]
            runbook_url = annotations["runbook_url"]
            assert runbook_url == f"{module.RUNBOOK}#{name.lower()}"
            assert urlsplit(runbook_url).path.endswith("/docs/runbook.md")
            assert runbook_url.partition("#")[2] in runbook_anchors()

        # 1. The limit reached pages, with the customer and feature, the runbook and the token.
        meter = {"customer": "acme", "feature": "api_calls"}
        [(note, alert), *_] = wait_for(
            lambda: webhook.find("CarnilUsageLimitReached", **meter), "CarnilUsageLimitReached")
        check_page(note, alert, "CarnilUsageLimitReached", meter)
        assert "acme" in alert["annotations"]["description"]
        assert "120%" in alert["annotations"]["description"]

        # 2. Credits exhausted pages.
        credits = {"customer": "globex", "feature": "api_calls"}
        [(note, alert), *_] = wait_for(
            lambda: webhook.find("CarnilCreditBalanceExhausted", **credits),
            "CarnilCreditBalanceExhausted")
        check_page(note, alert, "CarnilCreditBalanceExhausted", credits)
        assert "is -1" in alert["annotations"]["description"]

        # The inhibition: NearlyReached (for 5s) fires for both acme meters. The one below its
        # limit reaches the default receiver; the one over it reaches Alertmanager, which
        # holds it as suppressed by CarnilUsageLimitReached and never sends it.
        [(note, alert), *_] = wait_for(
            lambda: webhook.find("CarnilUsageLimitNearlyReached", customer="acme",
                                 feature="sms"), "CarnilUsageLimitNearlyReached of acme/sms")
        assert (note.path, note.authorization) == ("/default", f"Bearer {token}")
        assert alert["labels"]["severity"] == "warning"

        def suppressed():
            for managed in HTTP.get(f"{am_url}/api/v2/alerts", timeout=5).json():
                labels = managed["labels"]
                if (labels["alertname"] == "CarnilUsageLimitNearlyReached"
                        and {k: labels.get(k) for k in meter} == meter):
                    return managed["status"]
            return None
        status = wait_for(lambda: (s := suppressed()) and s["state"] == "suppressed" and s,
                          "suppressed CarnilUsageLimitNearlyReached of acme/api_calls")
        assert status["inhibitedBy"], status
        assert value('ALERTS{alertname="CarnilUsageLimitReached",alertstate="firing",'
                     'customer="acme",feature="api_calls"}') == 1
        # Several group_wait / group_interval / repeat_interval rounds (1 s each).
        observed_until = time.monotonic() + 4
        while time.monotonic() < observed_until:
            assert not webhook.find("CarnilUsageLimitNearlyReached", status=None, **meter), (
                "CarnilUsageLimitNearlyReached of acme/api_calls was delivered although "
                "CarnilUsageLimitReached fires for the same customer and feature")
            time.sleep(0.2)
        assert suppressed()["state"] == "suppressed"

        # 3. serve stops: the exporter-down alert pages (and it never did while serve was up).
        assert not webhook.find("CarnilExporterDown", status=None), diagnosis()
        stopped_at = time.monotonic()
        assert server.terminate(timeout=15) is not None, "serve did not stop on SIGTERM"
        [(note, alert), *_] = wait_for(
            lambda: webhook.find("CarnilExporterDown", after=stopped_at),
            "CarnilExporterDown after serve stopped")
        check_page(note, alert, "CarnilExporterDown",
                   {"job": "carnil", "instance": target, "reason": "scrape failed"})
        assert target in alert["annotations"]["description"]
