"""The service through its real server (gunicorn, 2 workers × 8 threads) over HTTP on 127.0.0.1:
enforced limits and credits under parallel clients, idempotency races, SIGKILL during ingest
and restart, graceful SIGTERM, the first-start admin key, keys from the command line, and the
structured request log."""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from servers import KEY_PATTERN, Server, run_cli, running_server

PROBLEM_JSON = "application/problem+json"
THREAD_JOIN_SECONDS = 30.0
BATCH_SIZE = 200
RESENDERS = 8
TRUE = {"enforce": "true"}


def run_parallel(count: int, work: Callable[[int], object]) -> list:
    """``work(i)`` in ``count`` threads released together; their results, in thread order.
    Any exception in a thread fails the test; every thread is bounded in time."""
    barrier = threading.Barrier(count, timeout=10)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + THREAD_JOIN_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a client thread did not finish in time"
    assert not errors, errors[0]
    return results


def assert_problem(answer, status: int) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].split(";")[0] == PROBLEM_JSON
    body = answer.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= body.keys()
    return body


def usage_event(customer: str, usage: float = 1, **extra) -> dict:
    return {"customer_id": customer, "feature_id": "api", "usage": usage, **extra}


def batch_events(batch: int, customer: str = "c3", size: int = BATCH_SIZE) -> list[dict]:
    return [{"type": "usage", "id": f"b{batch}-{i}", "customer_id": customer,
             "feature_id": "api", "usage": 1} for i in range(size)]


def total_usage(server: Server, customer: str) -> float:
    answer = server.get(f"/v1/customers/{customer}/report", params={"period": "day"})
    assert answer.status_code == 200, answer.text
    return answer.json()["summary"]["total_usage"]


def integrity(db_path) -> str:
    with sqlite3.connect(db_path, timeout=10) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def access_lines(stderr: str) -> list[dict]:
    lines = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("logger") == "carnil_analytics.access":
                lines.append(record)
    return lines


# -- 1. enforcement under parallel clients ----------------------------------------------------


def test_enforced_limit_and_credits_hold_exactly_under_50_parallel_clients(tmp_path):
    with running_server(tmp_path) as server:
        answer = server.put("/v1/customers/c1/features/api/limit",
                            json={"limit": 100, "period": "monthly"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["limit"] == 100

        def four_debits(_: int) -> list[tuple[int, str]]:
            outcomes = []
            for _ in range(4):
                answer = server.post("/v1/usage", params=TRUE, json=usage_event("c1"))
                outcomes.append((answer.status_code, answer.headers.get("Content-Type", "")))
                if answer.status_code == 429:
                    assert_problem(answer, 429)
                elif answer.status_code == 200:
                    assert answer.json() == {"recorded": True, "duplicate": False}
            return outcomes

        outcomes = [o for per_thread in run_parallel(50, four_debits) for o in per_thread]
        assert Counter(status for status, _ in outcomes) == {200: 100, 429: 100}
        meter = server.get("/v1/customers/c1/features/api/meter").json()
        assert (meter["current"], meter["limit"], meter["remaining"]) == (100, 100, 0)

        answer = server.post("/v1/customers/c2/features/api/credits", json={"amount": 60})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"balance": 60}

        def two_debits(_: int) -> list[int]:
            statuses = []
            for _ in range(2):
                answer = server.post("/v1/usage", params=TRUE, json=usage_event("c2"))
                statuses.append(answer.status_code)
                if answer.status_code == 402:
                    assert_problem(answer, 402)
            return statuses

        statuses = [s for per_thread in run_parallel(50, two_debits) for s in per_thread]
        assert Counter(statuses) == {200: 60, 402: 40}
        assert server.get("/v1/customers/c2/features/api/credits").json() == \
            {"balance": 0, "credit_metered": True}
        assert server.get("/v1/customers/c2/features/api/meter").json()["current"] == 60


# -- 2. idempotency race ----------------------------------------------------------------------


def test_idempotency_key_race_records_once_and_conflicts_on_another_payload(tmp_path):
    body = usage_event("c4", 5)
    headers = {"Idempotency-Key": "race-key-1"}
    with running_server(tmp_path) as server:
        answers = run_parallel(40, lambda _: server.post("/v1/usage", json=body,
                                                         headers=headers))
        assert [a.status_code for a in answers] == [200] * 40, [a.text for a in answers]
        bodies = Counter(json.dumps(a.json(), sort_keys=True) for a in answers)
        assert bodies == {'{"duplicate": false, "recorded": true}': 1,
                          '{"duplicate": true, "recorded": false}': 39}
        assert server.get("/v1/customers/c4/features/api/meter").json()["current"] == 5

        conflict = server.post("/v1/usage", json=usage_event("c4", 6), headers=headers)
        assert_problem(conflict, 422)
        assert server.get("/v1/customers/c4/features/api/meter").json()["current"] == 5


# -- 3. SIGKILL during batch ingest, then restart -----------------------------------------------


class BatchSender:
    """Threads that send numbered batches until stopped or until the server is gone."""

    def __init__(self, server: Server, numbers: itertools.count, threads: int = 3):
        self.server, self.numbers = server, numbers
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sent: list[int] = []  # every batch a request was started for
        self.acked: list[int] = []  # batches answered 200
        self.other: list[tuple[int, int, str]] = []  # any other answer: a bug
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> BatchSender:
        for thread in self.threads:
            thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                batch = next(self.numbers)
                self.sent.append(batch)
            try:
                answer = self.server.post("/v1/events", json=batch_events(batch))
            except Exception:  # noqa: BLE001 - the server was killed under this request
                return
            with self.lock:
                if answer.status_code == 200 and \
                        answer.json() == {"accepted": BATCH_SIZE, "duplicates": 0}:
                    self.acked.append(batch)
                else:
                    self.other.append((batch, answer.status_code, answer.text[:300]))

    def join(self) -> None:
        deadline = time.monotonic() + THREAD_JOIN_SECONDS
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a sender did not finish in time"


def test_sigkill_during_batch_ingest_loses_no_acknowledged_batch(tmp_path):
    numbers = itertools.count()
    every_batch: list[int] = []
    started = time.monotonic()
    with running_server(tmp_path) as server:
        for cycle in range(3):
            before = total_usage(server, "c3")
            sender = BatchSender(server, numbers).start()
            deadline = time.monotonic() + 5
            time.sleep(0.7)  # mid-stream: batches acknowledged and others in flight
            while len(sender.acked) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            server.kill()
            with sender.lock:
                acked, sent = list(sender.acked), list(sender.sent)
            sender.stop.set()
            sender.join()
            assert not sender.other, sender.other
            assert len(acked) >= 3, f"cycle {cycle}: too few batches before the kill"
            assert len(sent) > len(acked), f"cycle {cycle}: no batch was in flight"
            every_batch += sent
            assert integrity(server.db_path) == "ok"

            server.restart()
            after = total_usage(server, "c3")
            recorded = after - before
            assert len(acked) * BATCH_SIZE <= recorded <= len(sent) * BATCH_SIZE, cycle
            assert recorded % BATCH_SIZE == 0, f"a batch was recorded in part: {recorded}"

            # Re-send every batch of the cycle: the acknowledged ones are all there already.
            def resend(i: int, sent=sent) -> list[tuple[int, dict]]:
                return [(batch, server.post("/v1/events", json=batch_events(batch)).json())
                        for batch in sent[i::RESENDERS]]

            answers = [a for per_thread in run_parallel(RESENDERS, resend) for a in per_thread]
            assert sorted(batch for batch, _ in answers) == sorted(sent)
            for batch, body in answers:
                if batch in acked:
                    assert body == {"accepted": 0, "duplicates": BATCH_SIZE}, batch
                else:
                    assert body in ({"accepted": 0, "duplicates": BATCH_SIZE},
                                    {"accepted": BATCH_SIZE, "duplicates": 0}), (batch, body)
            assert total_usage(server, "c3") == len(every_batch) * BATCH_SIZE
        assert server.get("/v1/customers/c3/features/api/meter").json()["current"] == \
            len(every_batch) * BATCH_SIZE
        server.stop()
        assert integrity(server.db_path) == "ok"
    assert time.monotonic() - started < 30


# -- 4. graceful SIGTERM ------------------------------------------------------------------------


GRACEFUL_SECONDS = 10


@pytest.mark.parametrize("when", ["request-sent", "body-half-sent"])
def test_sigterm_completes_the_request_in_flight_and_exits_0(tmp_path, when):
    """``request-sent``: SIGTERM right after the whole request went out; ``body-half-sent``:
    SIGTERM while the server reads the body (surely in flight), the rest is sent after."""
    events = batch_events(0, customer="c5", size=1000)
    body = json.dumps(events).encode()
    with running_server(tmp_path, {"server": {"graceful_timeout_seconds": GRACEFUL_SECONDS,
                                              "max_batch_events": 1000}}) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
        conn.putrequest("POST", "/v1/events")
        conn.putheader("Authorization", f"Bearer {server.admin_key}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        half = len(body) // 2
        if when == "request-sent":
            conn.send(body)
        else:
            conn.send(body[:half])
            time.sleep(0.3)  # accepted, and a worker thread is reading the body
        signalled = time.monotonic()
        stopped = {}
        stopper = threading.Thread(target=lambda: stopped.update(
            code=server.terminate(timeout=GRACEFUL_SECONDS + 5),
            seconds=time.monotonic() - signalled), daemon=True)
        stopper.start()
        if when == "body-half-sent":
            time.sleep(0.3)  # the workers are stopping now
            conn.send(body[half:])
        answer = conn.getresponse()
        status, payload = answer.status, answer.read()
        conn.close()
        stopper.join(GRACEFUL_SECONDS + 10)
        assert status == 200, payload
        assert json.loads(payload) == {"accepted": 1000, "duplicates": 0}
        assert stopped["code"] == 0, server.stderr_text(-1)
        assert stopped["seconds"] < GRACEFUL_SECONDS
        log = server.stderr_text(0)
        signal_at = log.index("Handling signal: term")
        answered_at = log.index('"route":"/v1/events"')
        if when == "body-half-sent":  # the request was surely in flight at the signal
            assert signal_at < answered_at

        server.restart()
        assert total_usage(server, "c5") == 1000
        assert server.post("/v1/events", json=events).json() == \
            {"accepted": 0, "duplicates": 1000}


# -- 5. the first-start admin key ---------------------------------------------------------------


def key_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("carnil_")]


def test_first_start_without_admin_key_prints_one_key_once(tmp_path):
    with running_server(tmp_path, {"auth": {"admin_key": None}}) as server:
        assert "admin_key" not in server.config_path.read_text()
        lines = key_lines(server.stdout_text(0))
        assert len(lines) == 1, server.stdout_text(0)
        assert KEY_PATTERN.fullmatch(lines[0])
        key = lines[0]
        assert server.get("/v1/customers/x/report", key=key).status_code == 200
        assert server.get("/v1/customers/x/report", key=key + "x").status_code == 401

        server.restart()
        assert key_lines(server.stdout_text(1)) == []
        assert KEY_PATTERN.search(server.stdout_text(1)) is None
        assert server.get("/v1/customers/x/report", key=key).status_code == 200
        server.stop()
        assert key not in server.stderr_text()


# -- 6. keys from the command line --------------------------------------------------------------


def test_keys_created_on_the_command_line_have_their_role_and_scope(tmp_path):
    with running_server(tmp_path) as server:
        created = run_cli(server.config_path, "keys", "create", "--role", "read")
        assert created.returncode == 0, created.stderr
        read_key = created.stdout.strip()
        assert KEY_PATTERN.fullmatch(read_key), created.stdout
        assert read_key not in created.stderr
        assert server.get("/v1/customers/c1/report", key=read_key).status_code == 200
        assert server.get("/v1/customers/c1/features/api/meter", key=read_key).status_code == 200
        assert_problem(server.post("/v1/usage", key=read_key, json=usage_event("c1")), 403)

        created = run_cli(server.config_path, "keys", "create", "--role", "customer",
                          "--customer", "c9")
        assert created.returncode == 0, created.stderr
        c9_key = created.stdout.strip()
        assert KEY_PATTERN.fullmatch(c9_key), created.stdout
        assert server.get("/v1/customers/c9/report", key=c9_key).status_code == 200
        assert server.get("/v1/customers/c9/features/api/meter", key=c9_key).status_code == 200
        assert_problem(server.get("/v1/customers/c1/report", key=c9_key), 403)
        assert_problem(server.get("/v1/customers/c1/features/api/meter", key=c9_key), 403)
        assert_problem(server.post("/v1/usage", key=c9_key, json=usage_event("c9")), 403)

        refused = run_cli(server.config_path, "keys", "create", "--role", "customer")
        assert refused.returncode != 0
        assert "customer" in refused.stderr
        assert "Traceback" not in refused.stderr + refused.stdout
        assert KEY_PATTERN.search(refused.stdout + refused.stderr) is None

        server.stop()
        for secret in (read_key, c9_key, server.admin_key):
            assert secret not in server.stderr_text()


# -- 7. one structured log line per request, no secrets -----------------------------------------


def test_every_request_is_logged_as_one_json_line_without_secrets(tmp_path):
    bogus_key = "carnil_0123456789abcdef_not-a-real-secret-but-never-logged"
    with running_server(tmp_path) as server:
        created = run_cli(server.config_path, "keys", "create", "--role", "read")
        read_key = created.stdout.strip()
        read_id = read_key.split("_", 2)[1]
        customer = "/v1/customers/{customer_id}"
        feature = customer + "/features/{feature_id}"
        # (method, path, kwargs, expected status, expected route template, expected key_id)
        plan = [
            ("GET", "/healthz", {"key": None}, 200, "/healthz", None),
            ("GET", "/v1/customers/c1/report", {}, 200, customer + "/report", "config"),
            ("GET", "/v1/customers/c1/report", {"key": read_key}, 200, customer + "/report",
             read_id),
            ("GET", "/v1/customers/c1/report", {"key": None}, 401, customer + "/report", None),
            ("GET", "/v1/customers/c1/report", {"key": bogus_key}, 401, customer + "/report",
             None),
            ("POST", "/v1/usage", {"key": read_key, "json": usage_event("c1")}, 403,
             "/v1/usage", read_id),
            ("POST", "/v1/usage", {"json": usage_event("c1")}, 200, "/v1/usage", "config"),
            ("POST", "/v1/usage", {"data": b"{not json",
                                   "headers": {"Content-Type": "application/json"}}, 400,
             "/v1/usage", "config"),
            ("PUT", "/v1/customers/c1/features/api/limit",
             {"json": {"limit": 10, "period": "daily"}}, 200, feature + "/limit", "config"),
            ("DELETE", "/v1/customers/c1/features/nolimit/limit", {}, 404, feature + "/limit",
             "config"),
            ("GET", "/v1/no-such-route", {}, 404, "unmatched", None),
        ]
        for method, path, kwargs, status, _, _ in plan:
            answer = server.request(method, path, **kwargs)
            assert answer.status_code == status, (method, path, answer.text)
        server.stop()

        stderr = server.stderr_text()
        for secret in (server.admin_key, read_key, bogus_key, read_key.split("_", 2)[2]):
            assert secret not in stderr
            assert secret not in server.stdout_text()

        lines = access_lines(stderr)
        # One line per answer the client got (the start-up health polls included), no more.
        assert Counter((r["method"], r["status"]) for r in lines) == \
            Counter((method, status) for method, _, status in server.responses)
        for record in lines:
            assert {"method", "route", "status", "duration_ms", "key_id"} <= record.keys()
            assert isinstance(record["duration_ms"], int | float) and record["duration_ms"] >= 0
        tail = lines[-len(plan):]
        assert [(r["method"], r["route"], r["status"], r["key_id"]) for r in tail] == \
            [(m, route, s, key_id) for m, _, _, s, route, key_id in plan]


# -- a refusal before the body is read must not leave a dead kept-alive connection -------------


def exchange(sock, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` on ``sock``; the answer's head and body (by Content-Length), or
    (b"", b"") if the server closed the connection without answering."""
    try:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return b"", b""
            data += chunk
    except ConnectionError:
        return b"", b""
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


@pytest.mark.parametrize("case", ["401-unauthenticated-batch", "415-wrong-content-type"])
def test_a_refused_large_body_leaves_the_connection_usable_or_says_close(tmp_path, case):
    with running_server(tmp_path) as server:
        body = json.dumps(batch_events(0, size=1000)).encode()  # a legal batch, about 88 KB
        if case == "401-unauthenticated-batch":
            auth, content_type, status = b"", b"application/json", 401
        else:
            auth = f"Authorization: Bearer {server.admin_key}\r\n".encode()
            content_type, status = b"text/plain", 415
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            head, _ = exchange(sock, b"POST /v1/events HTTP/1.1\r\nHost: carnil\r\n" + auth
                               + b"Content-Type: " + content_type + b"\r\n"
                               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
            if b"\r\nconnection: close" in head.lower():
                return  # the client knows not to reuse the connection
            time.sleep(0.2)
            head, _ = exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: carnil\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), \
                "the connection was announced kept alive but closed without an answer"
