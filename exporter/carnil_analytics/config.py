"""Settings: one YAML file plus ``CARNIL_<SECTION>_<KEY>`` environment overrides.

This is the only module that reads ``os.environ``. Every section rejects unknown keys, so a typo
fails at start with the key and the reason instead of being silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError
from .models import Identifier

CONFIG_ENV = "CARNIL_CONFIG"
ENV_PREFIX = "CARNIL_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: SecretStr = SecretStr("sqlite:///carnil.db")
    # SQLite only. "normal" in WAL mode survives a crash of the process (every acknowledged
    # event is there after SIGKILL) but may lose the last commits on power loss; "full" also
    # survives power loss at the price of one fsync per commit.
    synchronous: Literal["normal", "full"] = "normal"
    busy_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    # PostgreSQL only: the URL points at a pooler in transaction mode (PgBouncer's
    # pool_mode = transaction), so no session state may outlive a transaction. It costs
    # server-side prepared statements: single events are about 0.6× as fast.
    transaction_pooling: bool = False

    @property
    def backend(self) -> str:
        """The kind of store: "sqlite" or "postgresql"."""
        return _backend(self.url)

    def shown_url(self) -> str:
        """The URL with its password hidden: useful to see (which file, which host?)."""
        return make_url(self.url.get_secret_value()).render_as_string(hide_password=True)

    def for_store(self, url: str, name: str) -> DatabaseSettings:
        """These settings for another store, at ``url`` (given as ``name``); transaction
        pooling is kept only for a PostgreSQL one. ``ConfigError`` if it is no database URL."""
        try:
            target = DatabaseSettings(**{**self.model_dump(), "url": url,
                                         "transaction_pooling": False})
        except PydanticValidationError as exc:
            raise ConfigError(f"{name}: {exc.errors()[0]['msg']}") from None
        return target.model_copy(update={
            "transaction_pooling": self.transaction_pooling and target.backend == "postgresql"})

    @field_validator("url")
    @classmethod
    def _a_database_url(cls, url: SecretStr) -> SecretStr:
        try:
            make_url(url.get_secret_value())
        except ArgumentError:
            raise PydanticCustomError(
                "database_url", "not a database URL such as sqlite:///carnil.db") from None
        return url

    @field_validator("transaction_pooling")
    @classmethod
    def _only_for_postgresql(cls, pooling: bool, info: ValidationInfo) -> bool:
        url = info.data.get("url")  # absent when the URL itself was refused
        if pooling and url is not None and _backend(url) != "postgresql":
            raise PydanticCustomError("postgresql_only", "only for a PostgreSQL URL")
        return pooling


def _backend(url: SecretStr) -> str:
    return make_url(url.get_secret_value()).get_backend_name()


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    max_batch_events: Annotated[int, Field(gt=0)] = 1000
    workers: Annotated[int, Field(ge=1, le=64)] = 2  # processes
    threads: Annotated[int, Field(ge=1, le=256)] = 8  # per process
    graceful_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0


class AuthSettings(_Section):
    admin_key: SecretStr | None = None
    metrics_key: SecretStr | None = None  # a fixed key of the "metrics" role, for Prometheus


class InfluxDBSettings(_Section):
    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v2"
    token: SecretStr | None = None
    org: str = "carnil"
    bucket: str = "carnil"
    database: str = "carnil"
    retention_policy: str | None = None  # v1 only; the database's default when unset
    username: str | None = None  # v1 only
    password: SecretStr | None = None  # v1 only
    batch_size: Annotated[int, Field(gt=0, le=100_000)] = 5000
    flush_interval_seconds: Annotated[float, Field(gt=0)] = 1.0
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    max_backoff_seconds: Annotated[float, Field(gt=0)] = 60.0
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 10.0
    # SPEC §4: readiness includes a reachable InfluxDB when the mirror is enabled.
    required_for_readiness: bool = True


class RealTimeSettings(_Section):
    enabled: bool = True
    update_interval: Annotated[int, Field(gt=0)] = 1000  # milliseconds
    rate_window_seconds: Annotated[int, Field(ge=60, le=86_400)] = 300


class CacheSettings(_Section):
    enabled: bool = True
    ttl: Annotated[float, Field(ge=0)] = 5.0  # seconds


class PrometheusSettings(_Section):
    max_customers: Annotated[int, Field(ge=0)] = 1000
    public: bool = False


Price = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]


class FeaturePrice(_Section):
    unit_price: Price = 0.0


class ModelPrice(_Section):
    """Prices per 1,000 tokens. Missing prices fall back as described in the README."""

    input_per_1k: Price | None = None
    output_per_1k: Price | None = None
    cached_input_per_1k: Price | None = None
    per_1k: Price | None = None


class PricingSettings(_Section):
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    features: dict[Identifier, FeaturePrice] = {}
    models: dict[Identifier, ModelPrice] = {}


class IngestSettings(_Section):
    # Raw events back idempotency and the recomputation of a limit period at rollover, so they
    # must outlive the longest (monthly) period.
    max_event_age_days: Annotated[int, Field(ge=32, le=3660)] = 35
    max_clock_skew_seconds: Annotated[int, Field(ge=0, le=3600)] = 300


class Settings(_Section):
    """The whole configuration of the library and the service."""

    database: DatabaseSettings = DatabaseSettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    influxdb: InfluxDBSettings = InfluxDBSettings()
    real_time: RealTimeSettings = RealTimeSettings()
    cache: CacheSettings = CacheSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    pricing: PricingSettings = PricingSettings()
    ingest: IngestSettings = IngestSettings()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Settings:
        """Settings from a dict shaped like the YAML file; environment variables are not read."""
        try:
            return cls.model_validate(dict(data or {}))
        except PydanticValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @classmethod
    def load(cls, path: str | os.PathLike | None = None,
             environ: Mapping[str, str] | None = None) -> Settings:
        """The YAML file (``path``, else ``$CARNIL_CONFIG``, else none) with env overrides."""
        environ = os.environ if environ is None else environ
        path = path or environ.get(CONFIG_ENV)
        data = _read_yaml(Path(path)) if path else {}
        return cls.from_mapping(_apply_environment(data, environ))

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, every secret replaced by ``'***'``."""
        data = _mask(self.model_dump(mode="python"))
        data["database"]["url"] = self.database.shown_url()  # only its password is secret
        return data


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return data


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``data`` with every ``CARNIL_<SECTION>_<KEY>`` variable written over it."""
    merged = {section: dict(values or {}) if isinstance(values, dict) else values
              for section, values in data.items()}
    # Longest first, so CARNIL_REAL_TIME_... is not read as a section "real".
    sections = sorted(Settings.model_fields, key=len, reverse=True)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is None:
            continue
        key = rest[len(section) + 1:]
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{section}: must be a mapping (set by {name})")
        if key not in Settings.model_fields[section].annotation.model_fields:
            raise ConfigError(f"{name}: {section}.{key} is not a configuration key")
        target[key] = _env_value(raw)
    return merged


def _env_value(raw: str) -> Any:
    """Mappings and lists in an environment variable are YAML; scalars stay strings for pydantic
    to coerce by the key's type (so a numeric token stays a string)."""
    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return parsed if isinstance(parsed, dict | list) else raw


def _describe(exc: PydanticValidationError) -> str:
    # Only pydantic's message, never the input value: the value may be a secret.
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors())


def _mask(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    return value


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_metrics(directory: str) -> None:
    """Make prometheus_client share self metrics across worker processes through files in
    ``directory``. Must run before prometheus_client is first imported."""
    os.environ[MULTIPROC_ENV] = directory


def multiprocess_metrics_dir() -> str | None:
    """Where prometheus_client's multiprocess mode keeps its files, when ``serve`` set it up."""
    return os.environ.get(MULTIPROC_ENV)
