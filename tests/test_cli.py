"""The command line, run as a user would: a real process on a fresh store."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date

from carnil_analytics import UsageTracker


def run_cli(*args, cwd, env=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CARNIL_")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "carnil_analytics.cli", *args], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=120)


def test_demo_fills_a_fresh_store(tmp_path):
    done = run_cli("demo", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "recorded" in done.stdout and "acme" in done.stdout
    tracker = UsageTracker({"database": {"url": f"sqlite:///{tmp_path / 'carnil.db'}"}})
    report = tracker.reports.customer_report("acme", "month")
    # a month of traffic on every day, with limits and credits set
    assert all(point.usage > 0 for point in report.usage[:-1])
    assert len(report.top_features) == 4 and len(report.top_models) == 3
    assert tracker.get_usage_limit("acme", "ai_cost").limit == 50
    assert tracker.get_meter("hooli", "ai_cost").credit_metered
    assert report.summary.total_cost > 0
    # the weekly rhythm: weekends are quieter than weekdays
    full_days = report.usage[:-1]
    weekend = [p.usage for p in full_days if date.fromisoformat(p.date).weekday() >= 5]
    weekdays = [p.usage for p in full_days if date.fromisoformat(p.date).weekday() < 5]
    assert sum(weekend) / len(weekend) < 0.7 * sum(weekdays) / len(weekdays)
    tracker.close()


def test_check_config_prints_the_effective_config_with_secrets_masked(tmp_path):
    (tmp_path / "c.yaml").write_text("server:\n  port: 9999\n")
    done = run_cli("--config", "c.yaml", "check-config", cwd=tmp_path,
                   env={"CARNIL_INFLUXDB_TOKEN": "very-secret", "CARNIL_SERVER_HOST": "0.0.0.0"})
    assert done.returncode == 0, done.stderr
    assert "port: 9999" in done.stdout and "host: 0.0.0.0" in done.stdout
    assert "very-secret" not in done.stdout and "token: '***'" in done.stdout


def test_a_bad_config_fails_with_the_key_and_reason(tmp_path):
    done = run_cli("check-config", cwd=tmp_path, env={"CARNIL_SERVER_PORT": "http"})
    assert done.returncode == 2
    assert "server.port" in done.stderr and "Traceback" not in done.stderr


def test_a_bad_database_url_fails_with_the_key_and_reason(tmp_path):
    done = run_cli("check-config", cwd=tmp_path,
                   env={"CARNIL_DATABASE_URL": "postgresql//carnil:s3cret@db:5432/carnil"})
    assert done.returncode == 2, done.stdout
    assert "database.url: not a database URL" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr
    copied = run_cli("store", "copy", "--to", "carnil.db", cwd=tmp_path)
    assert copied.returncode == 2, copied.stdout
    assert "--to: not a database URL" in copied.stderr and "Traceback" not in copied.stderr
    assert not list(tmp_path.iterdir())  # refused before the source store was opened
