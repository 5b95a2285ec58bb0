"""Writing line protocol to InfluxDB: the v2 API through ``influxdb-client`` (InfluxDB 2.x,
3.x, 1.8+, and servers that speak it, like VictoriaMetrics) or the v1 ``/write`` endpoint
(InfluxDB 1.x).

Both raise ``TransientWriteError`` for what a retry may fix (network, 5xx, 429, auth not yet
set up) and ``RejectedPoints`` for a 4xx about the data itself, which no retry will fix.
"""

from __future__ import annotations

import gzip
from typing import Protocol
from urllib.parse import urlencode

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from ..config import InfluxDBSettings

# 4xx answers about the points themselves (bad line protocol, field type conflict, too old
# for the retention policy...). Others (401/403/404: no token, no bucket yet) may heal.
_REJECTED = {400, 413, 422}


class TransientWriteError(Exception):
    """The write failed in a way a later retry may fix."""


class RejectedPoints(Exception):
    """InfluxDB refused the points themselves; retrying the same points cannot succeed."""


class Writer(Protocol):
    def write(self, lines: list[str]) -> None: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...


class V2Writer:
    """``/api/v2/write`` with token, org and bucket, gzip-compressed."""

    def __init__(self, settings: InfluxDBSettings):
        token = settings.token.get_secret_value() if settings.token else ""
        self._client = InfluxDBClient(url=settings.url, token=token, org=settings.org,
                                      enable_gzip=True,
                                      timeout=int(settings.timeout_seconds * 1000))
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._bucket, self._org = settings.bucket, settings.org

    def write(self, lines: list[str]) -> None:
        try:
            self._write_api.write(self._bucket, self._org, "\n".join(lines),
                                  write_precision=WritePrecision.NS)
        except ApiException as exc:
            _raise_for(exc.status, exc.body)
        except Exception as exc:  # urllib3 and socket errors: the server is not reachable
            raise TransientWriteError(f"{type(exc).__name__}: {exc}") from None

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False

    def close(self) -> None:
        self._client.close()


class V1Writer:
    """``/write?db=&rp=&precision=ns`` of InfluxDB 1.x, gzip-compressed, optional basic auth."""

    def __init__(self, settings: InfluxDBSettings):
        self._url = settings.url.rstrip("/")
        query = {"db": settings.database, "precision": "ns"}
        if settings.retention_policy:
            query["rp"] = settings.retention_policy
        self._write_url = f"{self._url}/write?{urlencode(query)}"
        self._headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else ""
            self._headers.update(urllib3.make_headers(
                basic_auth=f"{settings.username}:{password}"))
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(total=settings.timeout_seconds), retries=False)

    def write(self, lines: list[str]) -> None:
        body = gzip.compress("\n".join(lines).encode(), compresslevel=1)
        try:
            answer = self._http.request("POST", self._write_url, body=body,
                                        headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:
            raise TransientWriteError(f"{type(exc).__name__}: {exc}") from None
        if answer.status >= 300:
            _raise_for(answer.status, answer.data.decode(errors="replace"))

    def ping(self) -> bool:
        try:
            return self._http.request("GET", f"{self._url}/ping").status == 204
        except urllib3.exceptions.HTTPError:
            return False

    def close(self) -> None:
        self._http.clear()


def _raise_for(status: int | None, body: object) -> None:
    message = f"InfluxDB answered {status}: {str(body)[:500]}"
    if status in _REJECTED:
        raise RejectedPoints(message)
    raise TransientWriteError(message)


def make_writer(settings: InfluxDBSettings) -> Writer:
    return V2Writer(settings) if settings.api == "v2" else V1Writer(settings)
