"""The real service in a subprocess, for tests that talk to it over HTTP on 127.0.0.1.

``running_server(tmp_path, config)`` writes a YAML config (a SQLite file in ``tmp_path``, a
random admin key, a free loopback port), starts ``python -m carnil_analytics.cli serve`` in its
own process group, waits for ``GET /healthz`` and yields a ``Server``. At the end the server is
always stopped: SIGTERM, then SIGKILL to the whole process group after a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 20.0
STOP_GRACE_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 15.0
KEY_PATTERN = re.compile(r"carnil_[0-9a-f]+_[A-Za-z0-9_-]+")
_ADMIN = object()  # "use the server's admin key"


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def cli_env() -> dict[str, str]:
    """The environment for the service and the CLI: no CARNIL_* variable of the caller leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARNIL_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(config_path: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """``carnil-analytics --config F <args>`` to completion, output captured as text."""
    return subprocess.run([sys.executable, "-m", "carnil_analytics.cli", "--config",
                           str(config_path), *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(), check=False)


def group_pids(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(entry.name))
    return sorted(pids)


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in process group ``pgid``."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    return bool(group_pids(pgid))


class Server:
    """One service: its config, its process, its output, and a client per thread."""

    def __init__(self, tmp_path: Path, config: dict | None = None, port: int | None = None):
        self.tmp_path = Path(tmp_path)
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.db_path = self.tmp_path / "carnil.db"
        defaults = {
            "database": {"url": f"sqlite:///{self.db_path}"},
            "server": {"host": HOST, "port": self.port},
            "auth": {"admin_key": f"test-admin-{secrets.token_urlsafe(24)}"},
        }
        self.config = deep_merge(defaults, config or {})
        self.config["server"] = self.config["server"] | {"host": HOST, "port": self.port}
        # The configured admin key, if any: {"auth": {"admin_key": None}} leaves it out.
        self.configured_admin_key = self.config["auth"].pop("admin_key", None)
        if self.configured_admin_key is not None:
            self.config["auth"]["admin_key"] = self.configured_admin_key
        self.admin_key: str | None = self.configured_admin_key
        self.config_path = self.tmp_path / "carnil.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.process: subprocess.Popen | None = None
        self.runs: list[tuple[Path, Path]] = []  # (stdout, stderr) of every start
        self.responses: list[tuple[str, str, int]] = []  # (method, path, status) received
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    @property
    def database_url(self) -> str:
        return self.config["database"]["url"]

    # -- the process ----------------------------------------------------------------------

    def start(self) -> None:
        run = len(self.runs)
        stdout = self.tmp_path / f"server-{run}.stdout"
        stderr = self.tmp_path / f"server-{run}.stderr"
        self.runs.append((stdout, stderr))
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "carnil_analytics.cli", "--config",
                 str(self.config_path), "serve"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=cli_env(),
                cwd=self.tmp_path, process_group=0)
        self._wait_healthy()
        if self.admin_key is None:
            keys = KEY_PATTERN.findall(self.stdout_text(run))
            if keys:
                self.admin_key = keys[0]

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode} before it "
                            f"answered /healthz; stderr:\n{self.stderr_text(-1)}")
            try:
                answer = requests.get(self.url + "/healthz", timeout=1)
            except requests.RequestException:
                time.sleep(0.05)
                continue
            self._record("GET", "/healthz", answer.status_code)
            if answer.status_code == 200:
                return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"the server did not answer /healthz within {START_TIMEOUT_SECONDS} s; "
                    f"stderr:\n{self.stderr_text(-1)}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole process group (master and workers), and wait until it is gone."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._wait_group_gone()
        self._close_sessions()

    def terminate(self, timeout: float | None = None) -> int | None:
        """SIGTERM to the server (gunicorn's master stops its workers gracefully); wait up to
        ``timeout`` seconds for it to exit and return its exit code (None if it still runs)."""
        if self.process is None:
            return None
        # Idle kept-alive connections would hold a stopping worker for its linger time.
        self._close_sessions()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._wait_group_gone()
        self._close_sessions()
        return code

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the process group after a few seconds."""
        if self.process is None:
            return
        if self.terminate(timeout=STOP_GRACE_SECONDS) is None:
            self.kill()
        with contextlib.suppress(ProcessLookupError):  # no stray worker either
            os.killpg(self.process.pid, signal.SIGKILL)
        self._wait_group_gone()
        self._close_sessions()

    def restart(self) -> None:
        """Start again on the same config and port (stopping gracefully first if running)."""
        if self.running:
            self.stop()
        self.start()

    def _wait_group_gone(self, timeout: float = 5.0) -> None:
        """Workers hold the listening socket: a restart can only bind once they are gone."""
        deadline = time.monotonic() + timeout
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    # -- output ---------------------------------------------------------------------------

    def stdout_text(self, run: int | None = None) -> str:
        """The stdout of start number ``run`` (0 first, -1 last), or of every start."""
        return self._text(0, run)

    def stderr_text(self, run: int | None = None) -> str:
        """The stderr of start number ``run`` (0 first, -1 last), or of every start."""
        return self._text(1, run)

    def _text(self, stream: int, run: int | None) -> str:
        runs = self.runs if run is None else [self.runs[run]]
        return "".join(paths[stream].read_text(errors="replace") for paths in runs
                       if paths[stream].exists())

    # -- HTTP -----------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """This thread's session (connection pool) to the server."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # never a proxy: traffic stays on 127.0.0.1
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def request(self, method: str, path: str, *, key: Any = _ADMIN,
                headers: dict | None = None, **kwargs) -> requests.Response:
        """``method path`` with ``Authorization: Bearer key`` (the admin key unless given;
        ``key=None``: no Authorization header)."""
        headers = dict(headers or {})
        key = self.admin_key if key is _ADMIN else key
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_SECONDS)
        answer = self.session().request(method, self.url + path, headers=headers, **kwargs)
        self._record(method, path, answer.status_code)
        return answer

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.responses.append((method, path, status))

    def _close_sessions(self) -> None:
        """Drop pooled connections to a server that is gone; threads open new ones."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()


@contextlib.contextmanager
def running_server(tmp_path: Path, config: dict | None = None,
                   port: int | None = None) -> Iterator[Server]:
    """A started ``Server``; stopped at the end whatever happens.

    ``config`` is merged over the defaults; ``{"auth": {"admin_key": None}}`` leaves the admin
    key out of the file (the server then creates one and prints it; ``server.admin_key`` is it).
    """
    server = Server(tmp_path, config, port)
    try:
        server.start()
        yield server
    finally:
        server.stop()
