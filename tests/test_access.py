"""Access control over HTTP against a real ``serve`` process (issue 9, scenario 6).

* Every route of the served OpenAPI document × every role (admin from the configuration and
  created, ingest, read, metrics, customer for its own and for another customer, no key, a
  revoked key, wrong keys sharing a live key's id) answers as SPEC §4 declares. The same table
  runs in process in ``tests/test_api.py``; here it is proven over real HTTP.
* A revoked key stops working at once: the very next request, on any connection and worker.
* No key (nor the secret part of one) ever appears in the server's output (stderr and stdout of
  the whole run), in any answer other than the one that issued it, or in ``/metrics``.
* Keys are compared in constant time: the code compares digests with ``hmac.compare_digest``
  (checked in the source and by spying on the call), never the secret with ``==``.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import re
import secrets
import sqlite3
from contextlib import closing

import pytest
import requests

from carnil_analytics.api import auth as api_auth
from carnil_analytics.api import create_app
from carnil_analytics.store import keys as store_keys

from helpers import EXPECTED_ROLES, concrete, operations
from servers import running_server

PROBLEM = "application/problem+json"
METRICS_KEY = f"test-metrics-{secrets.token_urlsafe(24)}"

# Callers that hold no valid key: every protected route answers 401.
UNAUTHENTICATED = ("none", "revoked", "wrong-secret", "truncated", "extended", "other-id",
                   "raw-secret", "basic")


class Recorder:
    """Talks to the server and keeps every answer body (to grep them for secrets later)."""

    def __init__(self, server):
        self.server = server
        self.bodies: list[tuple[str, str, str]] = []  # (method, path, body)
        self.issuing: set[int] = set()  # indexes of answers that issued a key (shown once)

    def call(self, method: str, path: str, key: str | None, *, issuing: bool = False,
             scheme: str = "Bearer", **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"{scheme} {key}"
        answer = self.server.request(method, path, key=None, headers=headers, **kwargs)
        if issuing:
            self.issuing.add(len(self.bodies))
        self.bodies.append((method, path, answer.text))
        return answer

    def create_key(self, role: str, customer: str | None = None) -> dict:
        body = {"role": role} | ({"customer_id": customer} if customer else {})
        answer = self.call("POST", "/v1/keys", self.server.admin_key, json=body, issuing=True)
        assert answer.status_code == 201, answer.text
        return answer.json()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The server, a recorder, and a key (or a non-key) for every caller."""
    config = {"auth": {"metrics_key": METRICS_KEY}}
    with running_server(tmp_path_factory.mktemp("access"), config) as server:
        rec = Recorder(server)
        issued = {role: rec.create_key(role) for role in ("admin", "ingest", "read", "metrics")}
        issued["customer"] = rec.create_key("customer", "c1")
        revoked = rec.create_key("read")
        assert rec.call("GET", "/v1/customers/c1/report", revoked["key"]).status_code == 200
        assert rec.call("DELETE", f"/v1/keys/{revoked['id']}",
                        server.admin_key).status_code == 204
        read = issued["read"]["key"]
        key_id, secret = read.split("_", 2)[1:]
        callers = {role: made["key"] for role, made in issued.items()}
        callers |= {
            "config-admin": server.admin_key, "config-metrics": METRICS_KEY,
            "none": None, "revoked": revoked["key"],
            "wrong-secret": f"carnil_{key_id}_{secrets.token_urlsafe(32)}",
            "truncated": read[:-1], "extended": read + "A",
            "other-id": f"carnil_{secrets.token_hex(8)}_{secret}",
            "raw-secret": secret, "basic": read,
        }
        server.issued = issued
        server.revoked = revoked
        yield server, rec, callers


def assert_problem(answer, status: int) -> dict:
    assert answer.status_code == status, (answer.request.method, answer.request.url,
                                          answer.status_code, answer.text[:300])
    assert answer.headers["Content-Type"].split(";")[0] == PROBLEM
    body = answer.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def role_of(caller: str) -> str:
    return {"config-admin": "admin", "config-metrics": "metrics"}.get(caller, caller)


@pytest.mark.parametrize("caller", ["admin", "config-admin", "ingest", "read", "metrics",
                                    "config-metrics", "customer", *UNAUTHENTICATED])
def test_every_route_answers_every_caller_as_declared(env, caller):
    server, rec, callers = env
    key, role = callers[caller], role_of(caller)
    scheme = "Basic" if caller == "basic" else "Bearer"
    seen = set()
    for method, path, operation in operations(server.get("/openapi.json", key=None).json()):
        public = "security" not in operation
        if not public:
            seen.add(operation["operationId"])
        allowed = role == "admin" or role in EXPECTED_ROLES.get(operation.get("operationId"), ())
        for customer in ("c1", "c2"):
            # "{}" is no valid body for most routes: a caller let through gets a 4xx, no write.
            answer = rec.call(method, concrete(path, customer), key, scheme=scheme, data=b"{}",
                              headers={"Content-Type": "application/json"})
            where = (caller, method, path, customer, answer.status_code, answer.text[:200])
            if public:
                assert answer.status_code == 200, where
            elif caller in UNAUTHENTICATED:
                assert_problem(answer, 401)
                assert answer.headers["WWW-Authenticate"].startswith("Bearer"), where
            elif not allowed or (role == "customer" and customer != "c1"):
                assert_problem(answer, 403)
            else:
                assert answer.status_code not in (401, 403), where
                assert answer.status_code < 500, where
    assert seen == set(EXPECTED_ROLES)


def test_customer_keys_see_their_own_data_only(env):
    server, rec, callers = env
    for customer, usage in (("c1", 3), ("c2", 5)):
        assert rec.call("POST", "/v1/usage", callers["ingest"], json={
            "customer_id": customer, "feature_id": "scoped", "usage": usage}).status_code == 200
    own = rec.call("GET", "/v1/customers/c1/features/scoped/meter", callers["customer"])
    assert own.status_code == 200 and own.json()["current"] == 3
    for path in ("/v1/customers/c2/features/scoped/meter", "/v1/customers/c2/report",
                 "/v1/customers/C1/report", "/v1/customers/c1%2F/report",
                 "/v1/customers/c1./report"):
        answer = rec.call("GET", path, callers["customer"])
        assert answer.status_code in (400, 403), (path, answer.status_code)
        assert "c2" not in answer.text or answer.status_code == 403
    # Customer keys may not write, list or create anything, even for their own customer.
    assert_problem(rec.call("POST", "/v1/usage", callers["customer"], json={
        "customer_id": "c1", "feature_id": "scoped", "usage": 1}), 403)
    assert_problem(rec.call("POST", "/v1/keys", callers["customer"],
                            json={"role": "customer", "customer_id": "c2"}), 403)
    assert_problem(rec.call("PUT", "/v1/customers/c1/features/scoped/limit", callers["customer"],
                            json={"limit": 1e9, "period": "daily"}), 403)


def test_a_revoked_key_stops_working_at_once(env):
    server, rec, _ = env
    made = rec.create_key("ingest")
    key, key_id = made["key"], made["id"]
    body = {"customer_id": "c1", "feature_id": "revoke", "usage": 1}
    # Several connections, so both workers have seen (and could cache) the key.
    sessions = [requests.Session() for _ in range(6)]
    try:
        for session in sessions:
            session.trust_env = False
            answer = session.post(server.url + "/v1/usage", json=body, timeout=15,
                                  headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200
        assert rec.call("DELETE", f"/v1/keys/{key_id}", server.admin_key).status_code == 204
        for session in sessions:  # the very next request on every kept-alive connection
            answer = session.post(server.url + "/v1/usage", json=body, timeout=15,
                                  headers={"Authorization": f"Bearer {key}"})
            rec.bodies.append(("POST", "/v1/usage", answer.text))
            assert_problem(answer, 401)
    finally:
        for session in sessions:
            session.close()
    meter = rec.call("GET", "/v1/customers/c1/features/revoke/meter", server.admin_key).json()
    assert meter["current"] == 6
    assert_problem(rec.call("DELETE", f"/v1/keys/{key_id}", server.admin_key), 404)


def test_a_revoked_admin_key_cannot_revoke_or_create(env):
    server, rec, _ = env
    made = rec.create_key("admin")
    victim = rec.create_key("read")
    assert rec.call("DELETE", f"/v1/keys/{made['id']}", made["key"]).status_code == 204  # itself
    assert_problem(rec.call("POST", "/v1/keys", made["key"], json={"role": "admin"}), 401)
    assert_problem(rec.call("DELETE", f"/v1/keys/{victim['id']}", made["key"]), 401)
    assert rec.call("GET", "/v1/customers/c1/report", victim["key"]).status_code == 200


def test_no_key_appears_in_logs_bodies_or_metrics(env):
    """Runs after the tests above (file order): their answers and output are in the record."""
    server, rec, callers = env
    # Wrong keys with a live key's id, sent to routes that log, fail and validate.
    for made in server.issued.values():
        key_id, secret = made["key"].split("_", 2)[1:]
        for wrong in (f"carnil_{key_id}_{secret[::-1]}", f"carnil_{key_id}_{secret}x",
                      f"carnil_{key_id}_", f"carnil_{key_id}_{secret[:-2]}"):
            for method, path in (("GET", "/v1/customers/c1/report"), ("POST", "/v1/usage"),
                                 ("GET", "/metrics"), ("GET", "/v1/nowhere")):
                answer = rec.call(method, path, wrong, json={"customer_id": wrong})
                assert answer.status_code in (401, 404), (method, path, answer.status_code)
        # A key (or its secret) in places where ids belong: rejected, and not echoed back.
        for method, path, body in (
                ("POST", "/v1/usage", {"customer_id": made["key"] + " ", "feature_id": "a",
                                       "usage": 1}),
                ("POST", "/v1/usage", {"customer_id": "c1", "feature_id": "a", "usage": 1,
                                       "event_id": made["key"] + " x"}),
                ("GET", f"/v1/customers/{made['key']}/report", None),
                ("DELETE", f"/v1/keys/{made['key']}", None)):
            answer = rec.call(method, path, server.admin_key, json=body)
            assert answer.status_code < 500, (method, path, answer.status_code)
            if body is not None:
                assert_problem(answer, 400)
    scrapes = [rec.call("GET", "/metrics", key).text
               for key in (server.admin_key, METRICS_KEY, callers["read"],
                           server.issued["metrics"]["key"])]
    assert all("carnil_up 1" in text for text in scrapes)

    secrets_ = {name: key for name, key in callers.items() if key}
    secrets_ |= {f"{name}-secret": key.split("_", 2)[2] for name, key in callers.items()
                 if key and key.startswith("carnil_") and key.count("_") >= 2
                 and len(key.split("_", 2)[2]) >= 16}
    secrets_["revoked"] = server.revoked["key"]
    # The server's output: stderr (logs) and stdout of the whole run, every start.
    output = server.stderr_text() + server.stdout_text()
    assert "carnil_analytics.access" in output  # the access log is there to be searched
    bodies = [(m, p, b) for i, (m, p, b) in enumerate(rec.bodies) if i not in rec.issuing]
    assert len(bodies) > 500
    for name, secret in secrets_.items():
        assert secret not in output, f"the {name} key is in the server's output"
        for method, path, body in bodies:
            # A key put in a path is in the answer only where the path is: not at all.
            assert secret not in body or secret in path, (name, method, path, body[:300])
        for text in scrapes:
            assert secret not in text, f"the {name} key is in /metrics"
    # Nothing in the output even looks like a full key.
    assert not re.search(r"carnil_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}", output)


def test_issued_keys_are_shown_once_and_stored_hashed(env):
    server, rec, _ = env
    uri = f"file:{server.db_path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        dump = "\n".join(conn.iterdump())
    for made in server.issued.values():
        secret = made["key"].split("_", 2)[2]
        assert secret not in dump and made["key"] not in dump
        assert hashlib.sha256(secret.encode()).hexdigest() in dump
    assert server.admin_key not in dump and METRICS_KEY not in dump


# ------------------------------------------------------------------ constant-time comparison

def test_key_comparison_uses_compare_digest_on_digests():
    verify = inspect.getsource(store_keys.verify_key)
    assert "hmac.compare_digest(" in verify
    assert re.search(r"compare_digest\(\s*row\[\"secret_hash\"\],\s*secret_hash\(secret\)\)",
                     verify), verify
    assert not re.search(r"(secret|key)\s*[!=]=", verify)
    assert "hashlib.sha256" in inspect.getsource(store_keys.secret_hash)
    principal = inspect.getsource(api_auth.KeyRing.principal)
    assert "digest = _digest(key)" in principal
    assert "hmac.compare_digest(configured, digest)" in principal
    assert not re.search(r"(key|digest|configured)\s*[!=]=", principal)
    assert "sha256" in inspect.getsource(api_auth._digest)
    # Configured keys are kept only as digests.
    assert "_digest(secret.get_secret_value())" in inspect.getsource(api_auth.KeyRing)


def test_every_key_check_goes_through_compare_digest_with_digests(make_tracker, monkeypatch):
    tracker = make_tracker({"auth": {"admin_key": "configured-admin-key-0123456789",
                                     "metrics_key": "configured-metrics-key-01234"}})
    ring = create_app(tracker=tracker).extensions["carnil.keys"]
    issued = ring.create("read")
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    key_id, secret = issued.key.split("_", 2)[1:]
    cases = {"configured-admin-key-0123456789": "admin", "configured-metrics-key-01234":
             "metrics", issued.key: "read", f"carnil_{key_id}_{secret[:-1]}x": None,
             "configured-admin-key-012345678": None}
    for key, role in cases.items():
        calls.clear()
        principal = ring.principal(key)
        assert (principal.role if principal else None) == role, key
        assert calls, f"no constant-time comparison for {key!r}"
        for a, b in calls:
            assert type(a) is type(b)
            assert len(a) == len(b) and len(a) in (32, 64)  # sha256: raw or hex digests
            assert key not in (a, b) and secret not in (a, b)
