"""A real PostgreSQL for the tests: Debian's server, started once per session on a loopback port.

``PostgresServer.launch()`` runs ``initdb`` and ``postgres`` (as the ``postgres`` user when the
tests run as root, since the server refuses root) in a tmp dir of its own (pytest's are
private to root), removed at ``close()``. It listens on 127.0.0.1 only, with durability
switched off for speed (a test database is thrown away). Each test gets a database of its
own, cloned in a few milliseconds from a template migrated to the current schema, and
dropped after.

A missing server binary FAILS the tests that need it, with the package to install: CI must
never pass without PostgreSQL.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from servers import free_port

HOST = "127.0.0.1"
USER = "carnil"
START_TIMEOUT_SECONDS = 30.0
TEMPLATE = "carnil_template"
# Durability off and no background noise: test databases are scratch space.
SERVER_SETTINGS = {
    "listen_addresses": HOST, "fsync": "off", "synchronous_commit": "off",
    "full_page_writes": "off", "max_connections": "300", "shared_buffers": "128MB",
    "log_min_messages": "warning", "autovacuum": "off",
}


def binaries() -> Path:
    """The newest installed PostgreSQL's bin directory; FAILS the test if there is none."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                      key=lambda p: int(p.parent.parent.name))
    if not versions:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): the "
                    "store tests run on it and are never skipped. Install it (Debian: apt-get "
                    "install postgresql).", pytrace=False)
    return versions[-1].parent


def _as_server_user(base: Path) -> list[str]:
    """A command prefix that runs as ``postgres`` when we are root (and hands it ``base``)."""
    if os.geteuid() != 0:
        return []
    shutil.chown(base, user=pwd.getpwnam("postgres").pw_uid)
    return ["runuser", "-u", "postgres", "--"]


class PostgresServer:
    """One server on its own data dir and port; ``stop()`` and ``start()`` again make an
    outage, ``close()`` stops it for good and removes everything."""

    _names = itertools.count(1)

    def __init__(self):
        self.bin_dir = binaries()
        self.base = Path(tempfile.mkdtemp(prefix="carnil-postgres-"))
        self._prefix = _as_server_user(self.base)
        initdb = subprocess.run([*self._prefix, str(self.bin_dir / "initdb"), "-D",
                                 str(self.base / "data"), "-U", USER, "--auth=trust",
                                 "--encoding=UTF8", "--locale=C.UTF-8"],
                                capture_output=True, text=True, timeout=120, check=False)
        if initdb.returncode != 0:
            shutil.rmtree(self.base, ignore_errors=True)
            pytest.fail(f"initdb failed:\n{initdb.stdout}{initdb.stderr}", pytrace=False)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @classmethod
    def launch(cls) -> PostgresServer:
        """A new server, started, with the template test databases are cloned from."""
        server = cls()
        server.start()
        server._make_template()
        return server

    def start(self) -> None:
        settings = [arg for name, value in {**SERVER_SETTINGS, "port": str(self.port),
                                            "unix_socket_directories": str(self.base)}.items()
                    for arg in ("-c", f"{name}={value}")]
        with (self.base / "postgres.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*self._prefix, str(self.bin_dir / "postgres"), "-D", str(self.base / "data"),
                 *settings], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_accepting("postgres", self.port, self.process, self.base / "postgres.log",
                       self.stop)

    def _make_template(self) -> None:
        """The template every test database is cloned from: migrated to the current schema
        once, so a test pays for a copy, not for creating every table."""
        from carnil_analytics.config import DatabaseSettings
        from carnil_analytics.store.database import Database

        self.admin(f"CREATE DATABASE {TEMPLATE}")
        Database(DatabaseSettings(url=self.url(TEMPLATE))).close()

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}@{HOST}:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser, outside any transaction (CREATE DATABASE)."""
        import psycopg

        with psycopg.connect(host=HOST, port=self.port, user=USER, dbname="postgres",
                             autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        """A fresh database with the current schema and no data; its name."""
        name = f"carnil_test_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self.process is None:
            return
        # SIGINT is PostgreSQL's "fast shutdown": roll back sessions and stop. It goes to
        # the postmaster itself (runuser, in between as root, does not pass it on).
        pid_file = self.base / "data" / "postmaster.pid"
        shut_down(self.process, lambda: os.kill(int(pid_file.read_text().split()[0]),
                                                signal.SIGINT), timeout=15)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

class PgBouncer:
    """Debian's PgBouncer in transaction pooling mode in front of a ``PostgresServer``, on a
    loopback port of its own: every database of the server, reached through a small pool of
    server connections that a client keeps for one transaction only.

    A missing binary FAILS the tests that need it, like a missing PostgreSQL.
    """

    POOL_SIZE = 4  # server connections per database: far fewer than the clients

    def __init__(self, server: PostgresServer):
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            pytest.fail("PgBouncer is not installed: the transaction-pooling tests run on it "
                        "and are never skipped. Install it (Debian: apt-get install pgbouncer).",
                        pytrace=False)
        self.server = server
        self.base = Path(tempfile.mkdtemp(prefix="carnil-pgbouncer-"))
        self.port = free_port()
        config = self.base / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={HOST} port={server.port} user={USER}\n"
            "[pgbouncer]\n"
            f"listen_addr = {HOST}\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = any\npool_mode = transaction\n"
            f"default_pool_size = {self.POOL_SIZE}\nmax_client_conn = 1000\n"
            f"logfile = {self.base / 'pgbouncer.log'}\n")
        prefix = _as_server_user(self.base)
        self.process = subprocess.Popen([*prefix, binary, str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_accepting("pgbouncer", self.port, self.process, self.base / "pgbouncer.log",
                       self.close)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}@{HOST}:{self.port}/{database}"

    def close(self) -> None:
        # SIGINT is PgBouncer's safe shutdown.
        shut_down(self.process, lambda: os.killpg(self.process.pid, signal.SIGINT), timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


def shut_down(process: subprocess.Popen, ask: Callable[[], None], timeout: float) -> None:
    """Stop a server that is still running: ``ask`` it to, then kill its process group if it
    has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(OSError, ValueError):  # gone already, or no pid file yet
        ask()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def wait_accepting(name: str, port: int, process: subprocess.Popen, log: Path,
                   give_up: Callable[[], None]) -> None:
    """Wait until the server ``process`` on ``port`` accepts a connection; FAIL the test with
    the end of its ``log`` if it exits, or after ``give_up()`` if it is not up in time."""
    import psycopg

    def tail() -> str:
        return log.read_text()[-2000:] if log.exists() else ""

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"{name} exited at start:\n{tail()}", pytrace=False)
        try:
            psycopg.connect(host=HOST, port=port, user=USER, dbname="postgres",
                            connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                message = (f"{name} did not accept connections within "
                           f"{START_TIMEOUT_SECONDS} s:\n{tail()}")
                give_up()
                pytest.fail(message, pytrace=False)
            time.sleep(0.05)
