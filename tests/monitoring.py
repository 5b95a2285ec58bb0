"""Shared by the alerting tests: the project's monitoring files, Debian's Prometheus tools,
and server binaries run for the length of a test."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "provisioning" / "prometheus"
RULES = PROMETHEUS_DIR / "rules" / "carnil.rules.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "provisioning" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
INSTALL = "apt-get install --no-install-recommends prometheus prometheus-alertmanager"
START_TIMEOUT_SECONDS = 30.0

HTTP = requests.Session()
HTTP.trust_env = False  # never a proxy: every server here is on 127.0.0.1


def tool(*names: str) -> str:
    """The path of the first of ``names`` on PATH; fails (never skips) when there is none."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{' / '.join(names)} not found on PATH; these tests need it: {INSTALL}",
                pytrace=False)


def promtool_check_config(path: Path, scratch: Path) -> str:
    """``promtool check config`` with everything it checks, on a copy of ``path`` in
    ``scratch`` whose only change is where the files are: the key file (which exists only in
    the stack) and the rule files (relative to the original). Its output; fails on an error."""
    config = yaml.safe_load(path.read_text())
    key = scratch / "carnil-metrics-key"
    key.write_text("carnil_test_key\n")
    config["rule_files"] = [str(path.parent / rule) for rule in config["rule_files"]]
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(key)
    copied = scratch / path.name
    copied.write_text(yaml.safe_dump(config, sort_keys=False))
    done = subprocess.run([tool("promtool"), "check", "config", str(copied)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def build_rules(module_name: str = "build_rules"):
    """A fresh instance of build_rules.py: changing its THRESHOLDS changes nobody else's."""
    spec = importlib.util.spec_from_file_location(module_name, PROMETHEUS_DIR / "build_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def running_binary(args: list[str], ready_url: str, log: Path) -> Iterator[None]:
    """A server binary in its own process group, ready when ``ready_url`` answers 200;
    stopped (SIGTERM, then SIGKILL) whatever happens."""
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, process_group=0)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"{args[0]} exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(requests.RequestException):
                if HTTP.get(ready_url, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"{args[0]} not ready after {START_TIMEOUT_SECONDS} s:\n"
                            f"{log.read_text()}")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
