"""Crashes and races against a real ``serve`` process over HTTP on 127.0.0.1 (issue 9,
scenarios 1 and 4).

What each test proves:

- ``test_sigkill_during_mixed_ingest_five_times_loses_nothing_acknowledged`` (crash): three
  client threads send a seeded random mix of JSON batches (unique ``id``s), single ``/v1/usage``
  and ``/v1/ai-usage`` events (unique ``Idempotency-Key``s), credit grants (not idempotent) and
  limit changes (high limits); ``serve`` is SIGKILLed after a seeded random 0.3–1.2 s, five
  cycles in a row. After each restart: every acknowledged event is in the raw ``events`` table
  (and nothing that was never sent), ``PRAGMA integrity_check`` is ok (on SQLite), totals = sum
  of hour rollups = sum of raw events per (customer, kind, subject) (events, quantity,
  cost_nanos), the credit ledger holds every acknowledged grant and no more than were attempted,
  the balance = granted − debits of the recorded usage on the credited meter, the limit is one a
  PUT could have left last, and the meter's period usage = its raw events. At the end, replaying
  every event request (acknowledged or not, same ids/keys) gives exact totals: each event once.
- ``test_enforced_debits_from_5_processes_*`` (races): 5 client processes (multiprocessing
  spawn) × 10 threads post ``/v1/usage?enforce=true`` usage 1 at once: limit 30 → 30 × 200 and
  20 × 429; credits 25 → 25 × 200 and 25 × 402; the store agrees.
- ``test_identical_idempotency_keys_from_5_processes_record_once``: 50 identical requests with
  one ``Idempotency-Key`` from 5 processes: all 200, exactly one recorded, one raw event.
- ``test_put_limit_concurrent_with_enforced_ingest``: 4 threads ingest enforced usage 1 while
  another PUTs the limit alternately to 1000 and to the current usage: no 5xx, only 200/429,
  every 200 is a raw event and no 429 is, and the usage never exceeds 1000.

Each runs on both stores: a SQLite file, and a database of its own on the test PostgreSQL.

Run: ``python -m pytest tests/test_crash_and_races.py -q`` (well under 90 s per store).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import multiprocessing
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import requests
from sqlalchemy import Connection, create_engine, text

from servers import REQUEST_TIMEOUT_SECONDS, Server, running_server

SEED = 20260309
CYCLES = 5
CLIENTS = 3
JOIN_SECONDS = 30.0
CUSTOMER = "crash"
CREDITED = "credited"  # a credit-metered feature
LIMITED = "api"  # a feature whose limit the load changes
HIGH_LIMIT = 10**9
INITIAL_GRANT = 1000
TRUE = {"enforce": "true"}


# -- the store, read by a connection of our own ------------------------------------------------


@contextlib.contextmanager
def snapshot(url: str) -> Iterator[Connection]:
    """One consistent snapshot of the store at ``url`` for every read in the block."""
    engine = create_engine(url)
    try:
        options = {"isolation_level": "REPEATABLE READ"} \
            if engine.dialect.name == "postgresql" else {}
        with engine.connect().execution_options(**options) as conn, conn.begin():
            yield conn
    finally:
        engine.dispose()


def read_store(url: str, customer: str) -> dict:
    """Integrity (SQLite's own check; PostgreSQL guards its files itself), event ids, and per
    (kind, subject) sums of raw events, hour rollups, totals."""
    with snapshot(url) as conn:
        integrity = [tuple(row) for row in conn.exec_driver_sql("PRAGMA integrity_check")] \
            if conn.dialect.name == "sqlite" else [("ok",)]
        ids = list(conn.execute(text("SELECT event_id FROM events WHERE customer_id = :c"),
                                {"c": customer}).scalars())
        sums = {}
        for name, table, count in (("raw", "events", "count(*)"),
                                   ("hourly", "rollups_hour", "sum(events)"),
                                   ("totals", "totals", "sum(events)")):
            sums[name] = {(kind, subject): (int(n), quantity, int(cost))
                          for kind, subject, n, quantity, cost in conn.execute(text(
                              f"SELECT kind, subject, {count}, sum(quantity), sum(cost_nanos) "
                              f"FROM {table} WHERE customer_id = :c GROUP BY kind, subject"),
                              {"c": customer})}
        granted, entries = conn.execute(text(
            "SELECT coalesce(sum(amount), 0), count(*) FROM credit_ledger "
            "WHERE customer_id = :c AND feature_id = :f"), {"c": customer, "f": CREDITED}).one()
    return {"integrity": integrity, "ids": ids, **sums, "ledger": (granted, entries)}


def assert_consistent(state: dict) -> None:
    assert state["integrity"] == [("ok",)], state["integrity"]
    ids = [event_id for event_id in state["ids"] if event_id is not None]
    assert len(ids) == len(set(ids)), "an event id is stored twice"
    assert state["totals"] == state["hourly"] == state["raw"], state


# -- the crash load ---------------------------------------------------------------------------


class Ledger:
    """Every write the load attempted, and which were acknowledged, across all cycles."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.numbers = itertools.count()
        # (method, path, json body, headers, [(id, kind, subject, quantity, cost_nanos)])
        self.event_requests: list[tuple[str, str, object, dict, list[tuple]]] = []
        self.events: dict[str, tuple] = {}  # every event id ever sent -> (kind, subject, q, c)
        self.acked_ids: set[str] = set()
        self.grants: list[tuple[int, bool]] = []  # (amount, acknowledged)
        # (value, started, ended or None, acknowledged)
        self.limits: list[tuple[int, float, float | None, bool]] = []
        self.other: list[tuple[str, int, str]] = []  # any answer but the expected 200: a bug

    def limit_candidates(self) -> set[int]:
        """The limits the last committed PUT may have set: an acknowledged PUT is ruled out
        when another acknowledged PUT started after it was answered."""
        acked_starts = [start for _, start, _, acked in self.limits if acked]
        latest = max(acked_starts, default=float("-inf"))
        return {value for value, _, ended, acked in self.limits
                if not acked or ended >= latest}


class MixedLoad:
    """``CLIENTS`` threads sending a seeded random mix of writes until the server is gone."""

    def __init__(self, server: Server, ledger: Ledger, cycle: int):
        self.server, self.ledger, self.cycle = server, ledger, cycle
        self.stop = threading.Event()
        self.acked = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(CLIENTS)]

    def __enter__(self) -> MixedLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        deadline = time.monotonic() + JOIN_SECONDS
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a client did not finish in time"

    def _run(self, index: int) -> None:
        rng = random.Random(SEED * 100 + self.cycle * 10 + index)
        while not self.stop.is_set():
            with self.ledger.lock:
                n = next(self.ledger.numbers)
            op = rng.choices(["batch", "usage", "ai", "credit", "limit"], [3, 3, 3, 1, 1])[0]
            try:
                if op == "credit":
                    self._grant(rng.randint(1, 50))
                elif op == "limit":
                    self._put_limit(HIGH_LIMIT + n)
                else:
                    self._send_events(*self._event_request(op, n, rng))
            except requests.RequestException:
                return  # the server was killed under this request (or before it)

    @staticmethod
    def _event_request(op: str, n: int, rng: random.Random) -> tuple[str, object, dict, list]:
        if op == "batch":
            body, events = [], []
            for i, feature in enumerate((LIMITED, CREDITED, None, LIMITED)):
                event_id = f"b{n}-{i}"
                if feature is None:
                    tokens, cost = rng.randint(10, 100), rng.randint(1, 20)
                    body.append({"type": "ai_usage", "id": event_id, "customer_id": CUSTOMER,
                                 "model_id": "gpt-4o", "tokens": tokens, "cost": cost / 1000})
                    events.append((event_id, "ai_usage", "gpt-4o", tokens, cost * 10**6))
                else:
                    usage = rng.randint(1, 5)
                    body.append({"type": "usage", "id": event_id, "customer_id": CUSTOMER,
                                 "feature_id": feature, "usage": usage})
                    events.append((event_id, "usage", feature, usage, 0))
            return "/v1/events", body, {}, events
        key = f"{op[0]}{n}"
        if op == "usage":
            feature, usage = rng.choice((LIMITED, CREDITED)), rng.randint(1, 5)
            body = {"customer_id": CUSTOMER, "feature_id": feature, "usage": usage}
            return "/v1/usage", body, {"Idempotency-Key": key}, \
                [(key, "usage", feature, usage, 0)]
        tokens, cost = rng.randint(10, 100), rng.randint(1, 20)
        body = {"customer_id": CUSTOMER, "model_id": "gpt-4o", "tokens": tokens,
                "cost": cost / 1000}
        return "/v1/ai-usage", body, {"Idempotency-Key": key}, \
            [(key, "ai_usage", "gpt-4o", tokens, cost * 10**6)]

    def _send_events(self, path: str, body: object, headers: dict, events: list) -> None:
        with self.ledger.lock:
            self.ledger.event_requests.append(("POST", path, body, headers, events))
            for event_id, *rest in events:
                self.ledger.events[event_id] = tuple(rest)
        answer = self.server.post(path, json=body, headers=headers)
        expected = ({"accepted": len(events), "duplicates": 0} if path == "/v1/events"
                    else {"recorded": True, "duplicate": False})
        self._answered(path, answer, expected, lambda: self.ledger.acked_ids.update(
            event_id for event_id, *_ in events))

    def _grant(self, amount: int) -> None:
        with self.ledger.lock:
            entry = len(self.ledger.grants)
            self.ledger.grants.append((amount, False))
        answer = self.server.post(f"/v1/customers/{CUSTOMER}/features/{CREDITED}/credits",
                                  json={"amount": amount})

        def acked() -> None:
            self.ledger.grants[entry] = (amount, True)

        self._answered("credits", answer, None, acked)

    def _put_limit(self, value: int) -> None:
        with self.ledger.lock:
            entry = len(self.ledger.limits)
            started = time.monotonic()
            self.ledger.limits.append((value, started, None, False))
        answer = self.server.put(f"/v1/customers/{CUSTOMER}/features/{LIMITED}/limit",
                                 json={"limit": value, "period": "monthly"})
        ended = time.monotonic()

        def acked() -> None:
            self.ledger.limits[entry] = (value, started, ended, True)

        self._answered("limit", answer, None, acked)

    def _answered(self, what: str, answer: requests.Response, expected, on_ack) -> None:
        with self.ledger.lock:
            if answer.status_code == 200 and (expected is None or answer.json() == expected):
                on_ack()
                self.acked += 1
            else:
                self.ledger.other.append((what, answer.status_code, answer.text[:300]))


def check_after_restart(server: Server, ledger: Ledger, cycle: int) -> dict:
    state = read_store(server.database_url, CUSTOMER)
    assert_consistent(state)
    ids = set(state["ids"])
    assert ledger.acked_ids <= ids, f"cycle {cycle}: lost {sorted(ledger.acked_ids - ids)[:10]}"
    assert ids <= set(ledger.events), f"cycle {cycle}: unknown ids {ids - set(ledger.events)}"

    granted, entries = state["ledger"]
    acked_grants = sum(amount for amount, acked in ledger.grants if acked)
    all_grants = sum(amount for amount, _ in ledger.grants)
    assert acked_grants <= granted <= all_grants, (cycle, acked_grants, granted, all_grants)
    assert sum(acked for _, acked in ledger.grants) <= entries <= len(ledger.grants)
    debits = state["raw"].get(("usage", CREDITED), (0, 0.0, 0))[1]
    credits = server.get(f"/v1/customers/{CUSTOMER}/features/{CREDITED}/credits")
    assert credits.status_code == 200, credits.text
    assert credits.json() == {"balance": granted - debits, "credit_metered": True}, cycle

    limit = server.get(f"/v1/customers/{CUSTOMER}/features/{LIMITED}/limit")
    assert limit.status_code == 200, limit.text
    assert limit.json()["limit"] in ledger.limit_candidates(), (cycle, limit.json())
    meter = server.get(f"/v1/customers/{CUSTOMER}/features/{LIMITED}/meter")
    assert meter.status_code == 200, meter.text
    assert meter.json()["current"] == state["raw"].get(("usage", LIMITED), (0, 0.0, 0))[1]
    return state


def test_sigkill_during_mixed_ingest_five_times_loses_nothing_acknowledged(tmp_path, database_url):
    ledger = Ledger()
    rng = random.Random(SEED)
    started = time.monotonic()
    with running_server(tmp_path, {"database": {"url": database_url()}}) as server:
        answer = server.post(f"/v1/customers/{CUSTOMER}/features/{CREDITED}/credits",
                             json={"amount": INITIAL_GRANT})
        assert answer.status_code == 200, answer.text
        ledger.grants.append((INITIAL_GRANT, True))
        now = time.monotonic()
        answer = server.put(f"/v1/customers/{CUSTOMER}/features/{LIMITED}/limit",
                            json={"limit": HIGH_LIMIT, "period": "monthly"})
        assert answer.status_code == 200, answer.text
        ledger.limits.append((HIGH_LIMIT, now, time.monotonic(), True))

        for cycle in range(CYCLES):
            with MixedLoad(server, ledger, cycle) as load:
                time.sleep(rng.uniform(0.3, 1.2))
                server.kill()
            assert not ledger.other, ledger.other
            assert load.acked > 0, f"cycle {cycle}: nothing was acknowledged before the kill"
            server.restart()
            check_after_restart(server, ledger, cycle)

        # The mix was mixed, and some writes were in flight at a kill (unacknowledged).
        paths = Counter(path for _, path, *_ in ledger.event_requests)
        assert set(paths) == {"/v1/events", "/v1/usage", "/v1/ai-usage"}, paths
        assert len(ledger.grants) > 2 and len(ledger.limits) > 2
        assert len(ledger.acked_ids) < len(ledger.events), "no event write was in flight"

        # Replay every event request, acknowledged or not, with the same ids and keys.
        def replay(request: tuple) -> tuple[int, str]:
            method, path, body, headers, _ = request
            answer = server.request(method, path, json=body, headers=headers)
            return answer.status_code, answer.text[:300]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(replay, ledger.event_requests, timeout=JOIN_SECONDS))
        assert [status for status, _ in answers] == [200] * len(answers), \
            [a for a in answers if a[0] != 200][:5]

        state = check_after_restart(server, ledger, CYCLES)
        assert sorted(state["ids"]) == sorted(ledger.events), "not every event is there once"
        expected: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0, 0])
        for kind, subject, quantity, cost in ledger.events.values():
            sums = expected[(kind, subject)]
            sums[0] += 1
            sums[1] += quantity
            sums[2] += cost
        assert state["raw"] == {key: tuple(sums) for key, sums in expected.items()}
        report = server.get(f"/v1/customers/{CUSTOMER}/report", params={"period": "day"})
        assert report.status_code == 200, report.text
        assert report.json()["summary"]["total_usage"] == \
            expected[("usage", LIMITED)][1] + expected[("usage", CREDITED)][1]
        server.stop()
        assert_consistent(read_store(server.database_url, CUSTOMER))
    assert len(server.runs) == CYCLES + 1
    assert time.monotonic() - started < 60


# -- races from several client processes -------------------------------------------------------

PROCESSES = 5
THREADS_PER_PROCESS = 10


def _post_in_threads(url: str, key: str, path: str, requests_: list[tuple[dict, dict, dict]],
                     barrier, results, index: int) -> None:
    """In a spawned client process: one thread per request, all released together (after
    every process is ready); puts ``(index, [(status, body)])`` or ``(index, error)``."""
    try:
        local = threading.Barrier(len(requests_), timeout=20)
        answers: list = [None] * len(requests_)

        def post(i: int) -> None:
            params, body, headers = requests_[i]
            with requests.Session() as session:
                session.trust_env = False
                local.wait()
                answer = session.post(url + path, params=params, json=body,
                                      headers={"Authorization": f"Bearer {key}", **headers},
                                      timeout=REQUEST_TIMEOUT_SECONDS)
                answers[i] = (answer.status_code, answer.json())

        threads = [threading.Thread(target=post, args=(i,), daemon=True)
                   for i in range(len(requests_))]
        barrier.wait(timeout=30)  # every process has started: the requests go out at once
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_SECONDS)
        if any(answer is None for answer in answers):
            raise RuntimeError("a request did not finish")
        results.put((index, answers))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put((index, repr(exc)))


def post_from_processes(server: Server, path: str, make) -> list[tuple[int, dict]]:
    """``PROCESSES`` spawned processes × ``THREADS_PER_PROCESS`` threads each post once;
    ``make(process, thread)`` gives ``(params, body, headers)``. Every answer, in order."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    processes = [ctx.Process(target=_post_in_threads, daemon=True, args=(
        server.url, server.admin_key, path,
        [make(p, t) for t in range(THREADS_PER_PROCESS)], barrier, results, p))
        for p in range(PROCESSES)]
    for process in processes:
        process.start()
    try:
        collected = dict(results.get(timeout=60) for _ in processes)
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
    errors = [answer for answer in collected.values() if isinstance(answer, str)]
    assert not errors, errors
    return [answer for p in range(PROCESSES) for answer in collected[p]]


def raw_events(url: str, customer: str) -> list[tuple[str | None, float]]:
    with snapshot(url) as conn:
        return [tuple(row) for row in conn.execute(text(
            "SELECT event_id, quantity FROM events WHERE customer_id = :c"), {"c": customer})]


def usage(customer: str, **extra) -> dict:
    return {"customer_id": customer, "feature_id": "api", "usage": 1, **extra}


def test_enforced_debits_from_5_processes_against_a_limit_and_credits_fit_exactly(
        tmp_path, database_url):
    with running_server(tmp_path, {"database": {"url": database_url()}}) as server:
        answer = server.put("/v1/customers/lim/features/api/limit",
                            json={"limit": 30, "period": "monthly"})
        assert answer.status_code == 200, answer.text
        answers = post_from_processes(server, "/v1/usage",
                                      lambda p, t: (TRUE, usage("lim"), {}))
        assert Counter(status for status, _ in answers) == {200: 30, 429: 20}, answers
        assert all(body["status"] == 429 for status, body in answers if status == 429)
        meter = server.get("/v1/customers/lim/features/api/meter").json()
        assert (meter["current"], meter["remaining"]) == (30, 0), meter
        assert len(raw_events(server.database_url, "lim")) == 30

        answer = server.post("/v1/customers/cred/features/api/credits", json={"amount": 25})
        assert answer.status_code == 200, answer.text
        answers = post_from_processes(server, "/v1/usage",
                                      lambda p, t: (TRUE, usage("cred"), {}))
        assert Counter(status for status, _ in answers) == {200: 25, 402: 25}, answers
        assert all(body["status"] == 402 for status, body in answers if status == 402)
        assert server.get("/v1/customers/cred/features/api/credits").json() == \
            {"balance": 0, "credit_metered": True}
        assert len(raw_events(server.database_url, "cred")) == 25
        assert_consistent(read_store(server.database_url, "cred"))


def test_identical_idempotency_keys_from_5_processes_record_once(tmp_path, database_url):
    with running_server(tmp_path, {"database": {"url": database_url()}}) as server:
        answers = post_from_processes(server, "/v1/usage", lambda p, t: (
            TRUE, usage("idem", usage=5), {"Idempotency-Key": "race-key"}))
        assert [status for status, _ in answers] == [200] * 50, answers
        assert Counter(body["recorded"] for _, body in answers) == {True: 1, False: 49}
        assert all(body["duplicate"] is not body["recorded"] for _, body in answers)
        assert raw_events(server.database_url, "idem") == [("race-key", 5.0)]
        assert server.get("/v1/customers/idem/features/api/meter").json()["current"] == 5


def test_put_limit_concurrent_with_enforced_ingest(tmp_path, database_url):
    largest = 1000
    with running_server(tmp_path, {"database": {"url": database_url()}}) as server:
        path = "/v1/customers/pl/features/api/limit"
        assert server.put(path, json={"limit": largest, "period": "monthly"}).status_code == 200
        stop = threading.Event()
        lock = threading.Lock()
        outcomes: list[tuple[str, int]] = []  # (event id, status)
        puts: list[tuple[int, int]] = []  # (limit, status)
        errors: list[BaseException] = []

        def ingest(index: int) -> None:
            for n in itertools.count():
                if stop.is_set():
                    return
                event_id = f"pl-{index}-{n}"
                answer = server.post("/v1/usage", params=TRUE,
                                     json=usage("pl", event_id=event_id))
                with lock:
                    outcomes.append((event_id, answer.status_code))

        def change_limit() -> None:
            for n in itertools.count():
                if stop.is_set():
                    return
                if n % 2:
                    current = server.get("/v1/customers/pl/features/api/meter").json()["current"]
                    value = max(int(current), 1)
                else:
                    value = largest
                answer = server.put(path, json={"limit": value, "period": "monthly"})
                with lock:
                    puts.append((value, answer.status_code))
                time.sleep(0.05)

        def guarded(work, *args) -> None:
            try:
                work(*args)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=guarded, args=(ingest, i), daemon=True)
                   for i in range(4)]
        threads.append(threading.Thread(target=guarded, args=(change_limit,), daemon=True))
        for thread in threads:
            thread.start()
        time.sleep(2.5)
        stop.set()
        for thread in threads:
            thread.join(JOIN_SECONDS)
        assert not any(t.is_alive() for t in threads), "a client did not finish in time"
        assert not errors, errors[0]

        assert {status for _, status in puts} == {200}, puts
        assert len(puts) >= 4, puts
        statuses = Counter(status for _, status in outcomes)
        assert set(statuses) <= {200, 429}, statuses
        assert statuses[429] > 0 and statuses[200] > 0, statuses
        recorded = {event_id for event_id, _ in raw_events(server.database_url, "pl")}
        assert recorded == {event_id for event_id, status in outcomes if status == 200}
        meter = server.get("/v1/customers/pl/features/api/meter").json()
        assert meter["current"] == len(recorded) <= largest, meter
        assert_consistent(read_store(server.database_url, "pl"))
