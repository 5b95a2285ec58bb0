"""Configuration: YAML plus CARNIL_* environment overrides, validated with key and reason."""

from __future__ import annotations

import pytest

from carnil_analytics import ConfigError, Settings, UsageTracker

YAML = """
database:
  url: postgresql+psycopg://meter:s3cret-pw@db.internal/carnil
server:
  port: 9090
influxdb:
  enabled: true
  token: yaml-token-value
pricing:
  currency: EUR
  features:
    api_calls: {unit_price: 0.001}
  models:
    gpt-4o: {input_per_1k: 0.0025, output_per_1k: 0.01}
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "carnil.yaml"
    path.write_text(YAML)
    return path


def test_defaults():
    settings = Settings.load(environ={})
    assert settings.database.url.get_secret_value() == "sqlite:///carnil.db"
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)
    assert (settings.server.max_body_bytes, settings.server.max_batch_events) == (1048576, 1000)
    assert settings.ingest.max_event_age_days == 35
    assert settings.real_time.rate_window_seconds == 300
    assert settings.prometheus.max_customers == 1000


def test_yaml_file_and_environment_overrides(config_file):
    settings = Settings.load(config_file, environ={
        "CARNIL_SERVER_PORT": "7070",
        "CARNIL_REAL_TIME_RATE_WINDOW_SECONDS": "120",
        "CARNIL_INFLUXDB_TOKEN": "12345",  # numeric-looking secrets stay strings
        "CARNIL_PRICING_FEATURES": "{sms: {unit_price: 0.07}}",
        "CARNIL_PROMETHEUS_PUBLIC": "true",
        "UNRELATED": "x",
    })
    assert settings.server.port == 7070
    assert settings.real_time.rate_window_seconds == 120
    assert settings.influxdb.token.get_secret_value() == "12345"
    assert settings.influxdb.enabled is True
    assert settings.pricing.currency == "EUR"
    assert settings.pricing.features["sms"].unit_price == 0.07
    assert "api_calls" not in settings.pricing.features
    assert settings.prometheus.public is True


def test_config_path_from_environment(config_file):
    settings = Settings.load(environ={"CARNIL_CONFIG": str(config_file)})
    assert settings.server.port == 9090


@pytest.mark.parametrize("source, message", [
    ({"CARNIL_SERVER_PORT": "eighty"}, "server.port: Input should be a valid integer"),
    ({"CARNIL_SERVER_PORT": "70000"}, "server.port: Input should be less than or equal"),
    ({"CARNIL_SERVER_PROT": "1"}, "CARNIL_SERVER_PROT: server.prot is not a configuration key"),
    ({"CARNIL_INFLUXDB_API": "v3"}, "influxdb.api: Input should be 'v1' or 'v2'"),
    ({"CARNIL_INGEST_MAX_EVENT_AGE_DAYS": "7"}, "ingest.max_event_age_days"),
    ({"CARNIL_PRICING_CURRENCY": "euro"}, "pricing.currency"),
    ({"CARNIL_PRICING_FEATURES": "{bad id: {unit_price: 1}}"}, "pricing.features.bad id"),
    ({"CARNIL_PRICING_MODELS": "{m: {per_1k: -1}}"}, "pricing.models.m.per_1k"),
    ({"CARNIL_DATABASE_URL": "carnil.db"}, "database.url: not a database URL such as sqlite"),
    ({"CARNIL_DATABASE_TRANSACTION_POOLING": "true"},
     "database.transaction_pooling: only for a PostgreSQL URL"),
])
def test_bad_values_fail_with_the_key_and_the_reason(source, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        Settings.load(environ=source)


def test_unknown_keys_in_yaml_are_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  prot: 1\n")
    with pytest.raises(ConfigError, match=r"server\.prot: Extra inputs are not permitted"):
        Settings.load(path, environ={})
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        Settings.load(path, environ={})
    path.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Settings.load(path, environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        Settings.load(tmp_path / "missing.yaml", environ={})


def test_errors_never_echo_secrets():
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({"auth": {"admin_key": ["top-secret-key"]}})
    assert "top-secret-key" not in str(caught.value)
    assert "auth.admin_key" in str(caught.value)


def test_masked_configuration_hides_every_secret(config_file):
    settings = Settings.load(config_file, environ={"CARNIL_AUTH_ADMIN_KEY": "admin-secret"})
    masked = settings.masked()
    text = repr(masked)
    for secret in ("s3cret-pw", "yaml-token-value", "admin-secret"):
        assert secret not in text
    assert masked["auth"]["admin_key"] == masked["influxdb"]["token"] == "***"
    assert masked["database"]["url"] == "postgresql+psycopg://meter:***@db.internal/carnil"


def test_a_dict_config_ignores_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CARNIL_DATABASE_URL", "sqlite:///" + str(tmp_path / "from-env.db"))
    tracker = UsageTracker({"database": {"url": f"sqlite:///{tmp_path / 'explicit.db'}"}})
    tracker.close()
    assert (tmp_path / "explicit.db").exists() and not (tmp_path / "from-env.db").exists()
    tracker = UsageTracker.from_file()
    tracker.close()
    assert (tmp_path / "from-env.db").exists()
