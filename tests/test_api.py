"""The HTTP API in process (Flask's test client): routes, roles and scopes, every error code,
batches, NDJSON and idempotency keys."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from carnil_analytics.api import create_app

from helpers import EXPECTED_ROLES, concrete, operations

ADMIN_KEY = "test-admin-key-0123456789"
PROBLEM = "application/problem+json"


@pytest.fixture
def app(make_tracker):
    tracker = make_tracker({"auth": {"admin_key": ADMIN_KEY},
                            "server": {"max_body_bytes": 64 * 1024, "max_batch_events": 50}})
    return create_app(tracker=tracker)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def keys(client):
    """A key of every role; the customer key is scoped to c1."""
    made = {"admin": ADMIN_KEY}
    for role, customer in (("ingest", None), ("read", None), ("metrics", None),
                           ("customer", "c1")):
        body = {"role": role} | ({"customer_id": customer} if customer else {})
        answer = client.post("/v1/keys", json=body, headers=auth(ADMIN_KEY))
        assert answer.status_code == 201, answer.json
        made[role] = answer.json["key"]
    return made


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def admin() -> dict:
    return auth(ADMIN_KEY)


def assert_problem(answer, status: int) -> dict:
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.mimetype == PROBLEM
    body = answer.json
    assert body["status"] == status and body["title"] and body["detail"]
    assert body["type"].startswith("https://")
    return body


# ------------------------------------------------------------------ roles and scopes



@pytest.mark.parametrize("role", ["admin", "ingest", "read", "metrics", "customer", None,
                                  "bogus"])
def test_every_route_answers_every_role_as_declared(client, keys, role):
    seen = set()
    for method, path, operation in operations(client.get("/openapi.json").json):
        if "security" not in operation:
            continue  # public routes
        seen.add(operation["operationId"])
        allowed = role == "admin" or role in EXPECTED_ROLES[operation["operationId"]]
        for customer in ("c1", "c2"):
            headers = auth(keys[role]) if role in keys else \
                auth("carnil_deadbeef_nope") if role == "bogus" else {}
            answer = client.open(concrete(path, customer), method=method, headers=headers,
                                 data=b"{}", content_type="application/json")
            if role in (None, "bogus"):
                assert_problem(answer, 401)
            elif not allowed or (role == "customer" and customer != "c1"):
                assert_problem(answer, 403)
            else:  # let through: anything but an auth failure (the body "{}" may be invalid)
                assert answer.status_code not in (401, 403), (method, path, role)
                assert answer.status_code < 500
    assert seen == set(EXPECTED_ROLES)


def test_public_routes(client):
    assert client.get("/healthz").json == {"status": "ok", "checks": {}}
    assert client.get("/readyz").json == {"status": "ok", "checks": {"store": "ok"}}
    spec = client.get("/openapi.json").json
    assert spec["openapi"] == "3.1.0"
    assert "/v1/customers/{customer_id}/features/{feature_id}/meter" in spec["paths"]


def test_a_revoked_key_stops_working(client, keys):
    answer = client.post("/v1/keys", json={"role": "read"}, headers=admin())
    key, key_id = answer.json["key"], answer.json["id"]
    assert client.get("/v1/customers/c1/report", headers=auth(key)).status_code == 200
    assert client.delete(f"/v1/keys/{key_id}", headers=admin()).status_code == 204
    assert_problem(client.get("/v1/customers/c1/report", headers=auth(key)), 401)
    assert_problem(client.delete(f"/v1/keys/{key_id}", headers=admin()), 404)


@pytest.mark.parametrize("header", ["Bearer", "Basic dXNlcjpwYXNz", f"bearer  {ADMIN_KEY}x",
                                    "carnil_x_y", "Bearer carnil__", "Bearer carnil_a_b_c"])
def test_malformed_authorization_is_401(client, header):
    answer = client.get("/v1/customers/c1/report", headers={"Authorization": header})
    assert_problem(answer, 401)
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("body, message", [
    ({"role": "customer"}, "customer_id is required"),
    ({"role": "read", "customer_id": "c1"}, "only for them"),
    ({"role": "root"}, "Input should be"),
])
def test_key_requests_are_validated(client, body, message):
    problem = assert_problem(client.post("/v1/keys", json=body, headers=admin()), 400)
    assert message in json.dumps(problem["errors"])


# ------------------------------------------------------------------ ingest

def test_single_routes_record_and_report_duplicates(client, keys):
    ingest = auth(keys["ingest"])
    body = {"customer_id": "c1", "feature_id": "api", "usage": 5, "event_id": "e1"}
    assert client.post("/v1/usage", json=body, headers=ingest).json == \
        {"recorded": True, "duplicate": False}
    assert client.post("/v1/usage", json=body, headers=ingest).json == \
        {"recorded": False, "duplicate": True}
    ai = {"customer_id": "c1", "model_id": "gpt-4o", "input_tokens": 700, "output_tokens": 300,
          "cost": 0.25}
    assert client.post("/v1/ai-usage", json=ai, headers=ingest).json["recorded"] is True
    meter = client.get("/v1/customers/c1/features/ai_tokens/meter", headers=admin()).json
    assert meter["current"] == 1000


def test_idempotency_key_header(client, keys):
    ingest = auth(keys["ingest"])
    body = {"customer_id": "c1", "feature_id": "api", "usage": 5}
    headers = ingest | {"Idempotency-Key": "req-42"}
    assert client.post("/v1/usage", json=body, headers=headers).json["duplicate"] is False
    assert client.post("/v1/usage", json=body, headers=headers).json["duplicate"] is True
    other = client.post("/v1/usage", json=body | {"usage": 6}, headers=headers)
    assert assert_problem(other, 422)["type"].endswith("idempotency-conflict")
    mismatch = client.post("/v1/usage", json=body | {"event_id": "other"}, headers=headers)
    assert assert_problem(mismatch, 400)["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    bad = client.post("/v1/usage", json=body, headers=ingest | {"Idempotency-Key": "a b"})
    assert_problem(bad, 400)
    assert client.get("/v1/customers/c1/features/api/meter", headers=admin()).json["current"] \
        == 5


def event(i: int, **extra) -> dict:
    return {"type": "usage", "customer_id": "c1", "feature_id": "api", "usage": 1,
            "id": f"b-{i}", **extra}


def test_batch_as_array_object_and_ndjson(client, keys):
    ingest = auth(keys["ingest"])
    answer = client.post("/v1/events", json=[event(i) for i in range(10)], headers=ingest)
    assert answer.json == {"accepted": 10, "duplicates": 0}
    answer = client.post("/v1/events", json=event(10), headers=ingest)
    assert answer.json == {"accepted": 1, "duplicates": 0}
    lines = "\n".join(json.dumps(event(i)) for i in range(8, 14)) + "\n\n"
    answer = client.post("/v1/events", data=lines, headers=ingest,
                         content_type="application/x-ndjson")
    assert answer.json == {"accepted": 3, "duplicates": 3}
    ai = {"type": "ai_usage", "customer_id": "c1", "model_id": "m", "tokens": 10, "id": "ai-1"}
    assert client.post("/v1/events", json=[ai], headers=ingest).json["accepted"] == 1
    assert client.get("/v1/customers/c1/features/api/meter", headers=admin()).json["current"] \
        == 14


@pytest.mark.parametrize("bad, loc", [
    ({"usage": -1}, ["body", 3, "usage"]),
    ({"usage": "1"}, ["body", 3, "usage"]),
    ({"usage": True}, ["body", 3, "usage"]),
    ({"customer_id": "bad id"}, ["body", 3, "customer_id"]),
    ({"timestamp": "2026-03-18T12:00:00"}, ["body", 3, "timestamp"]),
    ({"type": "refund"}, ["body", 3]),
    ({"surprise": 1}, ["body", 3, "surprise"]),
])
def test_one_bad_event_rejects_the_batch_with_its_index(client, keys, bad, loc):
    batch = [event(i) for i in range(6)]
    batch[3] = batch[3] | bad
    for content in ("json", "ndjson"):
        if content == "json":
            answer = client.post("/v1/events", json=batch, headers=auth(keys["ingest"]))
        else:
            answer = client.post("/v1/events", data="\n".join(json.dumps(e) for e in batch),
                                 headers=auth(keys["ingest"]), content_type="application/x-ndjson")
        problem = assert_problem(answer, 400)
        assert problem["index"] == 3
        assert problem["errors"][0]["loc"][:len(loc)] == loc
    assert client.get("/v1/customers/c1/report", headers=admin()).json["summary"][
        "total_usage"] == 0


def test_a_timestamp_outside_the_window_rejects_the_batch(client, keys, clock):
    batch = [event(0), event(1, timestamp=(clock.now + timedelta(hours=1)).isoformat())]
    problem = assert_problem(client.post("/v1/events", json=batch,
                                         headers=auth(keys["ingest"])), 400)
    assert (problem["index"], problem["errors"][0]["loc"]) == (1, ["body", 1, "timestamp"])


def test_enforced_batch_refused_whole_with_429_and_402(client, keys):
    client.put("/v1/customers/c1/features/api/limit", json={"limit": 3, "period": "daily"},
               headers=admin())
    problem = assert_problem(client.post("/v1/events?enforce=true",
                                         json=[event(i) for i in range(5)],
                                         headers=auth(keys["ingest"])), 429)
    assert problem["index"] == 3
    client.post("/v1/customers/c2/features/api/credits", json={"amount": 1}, headers=admin())
    answer = client.post("/v1/usage?enforce=true", headers=auth(keys["ingest"]),
                         json={"customer_id": "c2", "feature_id": "api", "usage": 2})
    assert_problem(answer, 402)
    assert client.get("/v1/customers/c1/features/api/meter", headers=admin()).json["current"] \
        == 0


@pytest.mark.parametrize("query", ["enforce=maybe", "enforce=", "unknown=1"])
def test_bad_query_strings_are_400(client, keys, query):
    answer = client.post(f"/v1/usage?{query}", headers=auth(keys["ingest"]),
                         json={"customer_id": "c1", "feature_id": "api", "usage": 1})
    assert assert_problem(answer, 400)["errors"][0]["loc"][0] == "query"


def test_batch_size_and_body_size_limits(client, keys):
    ingest = auth(keys["ingest"])
    problem = assert_problem(client.post("/v1/events", json=[event(i) for i in range(51)],
                                         headers=ingest), 413)
    assert "max_batch_events" in problem["detail"]
    huge = json.dumps([event(i, metadata={"pad": "x" * 200}) for i in range(300)])
    assert_problem(client.post("/v1/events", data=huge, headers=ingest,
                               content_type="application/json"), 413)
    assert_problem(client.post("/v1/events", json=[], headers=ingest), 400)


@pytest.mark.parametrize("data, content_type, status", [
    (b"", "application/json", 400),
    (b"   ", "application/json", 400),
    (b"{", "application/json", 400),
    (b"\xff\xfe\x00{}", "application/json", 400),
    (b"[" * 10_000, "application/json", 400),
    (b"{" * 10_000, "application/json", 400),
    (b'{"customer_id":"c1","feature_id":"api","usage":' + b"9" * 5000 + b"}",
     "application/json", 400),
    (b'{"customer_id":"c1","feature_id":"api","usage":NaN}', "application/json", 400),
    (b'{"customer_id":"c1","feature_id":"api","usage":Infinity}', "application/json", 400),
    (b'{"customer_id":"c1","feature_id":"api","usage":1e999}', "application/json", 400),
    (b'{"customer_id":"c1","feature_id":"api","usage":1} {"x":1}', "application/json", 400),
    (b'{"customer_id":"c1","feature_id":"api","usage":1}', "text/plain", 415),
    (b'{"customer_id":"c1","feature_id":"api","usage":1}', "application/x-www-form-urlencoded",
     415),
    (b'{"customer_id":"c1","feature_id":"api","usage":1}', None, 415),
    (b'"just a string"', "application/json", 400),
    (b"null", "application/json", 400),
])
def test_malformed_bodies_are_4xx_problems(client, keys, data, content_type, status):
    headers = auth(keys["ingest"])
    if content_type:
        headers["Content-Type"] = content_type
    for route in ("/v1/usage", "/v1/events"):
        assert_problem(client.post(route, data=data, headers=headers), status)


# ------------------------------------------------------------------ reads and admin

def test_reads(client, keys):
    ingest, read = auth(keys["ingest"]), auth(keys["read"])
    client.post("/v1/events", headers=ingest, json=[
        event(1, cost=0.5), event(2, usage=3),
        {"type": "ai_usage", "customer_id": "c1", "model_id": "gpt-4o", "tokens": 1200,
         "cost": 0.12}])
    report = client.get("/v1/customers/c1/report?period=week", headers=read).json
    assert report["summary"] == {"total_usage": 4, "total_cost": 0.62,
                                 "average_daily_usage": 4 / 7}
    assert report["top_models"] == [{"model_id": "gpt-4o", "tokens": 1200, "cost": 0.12}]
    usage = client.get("/v1/customers/c1/features/api/usage?period=day", headers=read).json
    assert len(usage) == 24 and usage[-1]["usage"] == 4 and usage[-1]["period"] == "hour"
    ranged = client.get("/v1/customers/c1/features/api/usage?start=2026-03-18T00:00:00Z"
                        "&end=2026-03-18T23:00:00%2B00:00", headers=read).json
    assert sum(b["usage"] for b in ranged) == 4
    ai = client.get("/v1/customers/c1/ai-usage?model=gpt-4o&period=day", headers=read).json
    assert sum(b["tokens"] for b in ai) == 1200
    trends = client.get("/v1/customers/c1/features/api/trends?period=week", headers=read).json
    assert trends[-1]["usage"] == 4 and trends[-1]["change_pct"] is None
    analysis = client.get("/v1/customers/c1/cost-analysis", headers=read).json
    assert (analysis["total_cost"], analysis["ai_cost"]) == (0.62, 0.12)
    meter = client.get("/v1/customers/c1/features/api/meter", headers=read).json
    assert set(meter) >= {"current", "limit", "remaining", "reset_at", "rate_per_minute",
                          "credit_balance"}
    assert (meter["current"], meter["limit"], meter["remaining"]) == (4, None, None)


@pytest.mark.parametrize("query", ["period=fortnight", "start=2026-03-01T00:00:00Z",
                                   "start=2026-03-02T00:00:00Z&end=2026-03-01T00:00:00Z",
                                   "start=yesterday&end=today",
                                   "start=2026-03-01T00:00:00&end=2026-03-02T00:00:00",
                                   "model=bad%20id"])
def test_bad_read_queries_are_400(client, query):
    assert_problem(client.get(f"/v1/customers/c1/ai-usage?{query}", headers=admin()), 400)


@pytest.mark.parametrize("path", ["/v1/customers/bad%20id/report",
                                  "/v1/customers/c1/features/-x/meter",
                                  "/v1/customers/" + "x" * 200 + "/report"])
def test_bad_ids_in_paths_are_400(client, path):
    problem = assert_problem(client.get(path, headers=admin()), 400)
    assert problem["errors"][0]["loc"][0] == "path"


def test_ids_with_slashes_route(client):
    client.post("/v1/usage", headers=admin(),
                json={"customer_id": "org/team", "feature_id": "a/b", "usage": 2})
    meter = client.get("/v1/customers/org%2Fteam/features/a%2Fb/meter", headers=admin()).json
    assert meter["current"] == 2 and meter["customer_id"] == "org/team"


def test_limits_credits_and_checks(client, keys):
    limit = client.put("/v1/customers/c1/features/api/limit", headers=admin(),
                       json={"limit": 10, "period": "daily",
                             "reset_at": "2026-03-18T18:30:00Z"})
    assert limit.json == {"feature_id": "api", "limit": 10, "period": "daily",
                          "reset_at": "2026-03-18T18:30:00Z"}
    assert client.get("/v1/customers/c1/features/api/limit", headers=auth(keys["read"])).json \
        == limit.json
    grant = client.post("/v1/customers/c1/features/api/credits", headers=admin(),
                        json={"amount": 8, "reason": "trial"})
    assert grant.json == {"balance": 8}
    assert client.get("/v1/customers/c1/features/api/credits", headers=auth(keys["read"])).json \
        == {"balance": 8, "credit_metered": True}
    check = client.post("/v1/customers/c1/features/api/check", json={"required": 9},
                        headers=auth(keys["customer"]))
    assert check.json == {"allowed": False, "reason": "insufficient_credits", "remaining": 10,
                          "balance": 8}
    check = client.post("/v1/customers/c1/features/api/check", json={"required": 8},
                        headers=auth(keys["ingest"]))
    assert check.json["allowed"] is True and check.json["reason"] is None
    assert client.delete("/v1/customers/c1/features/api/limit", headers=admin()).status_code \
        == 204
    assert_problem(client.get("/v1/customers/c1/features/api/limit", headers=admin()), 404)
    assert_problem(client.delete("/v1/customers/c1/features/api/limit", headers=admin()), 404)


@pytest.mark.parametrize("route, method, body", [
    ("limit", "PUT", {"limit": -1, "period": "daily"}),
    ("limit", "PUT", {"limit": 10, "period": "hourly"}),
    ("limit", "PUT", {"limit": "10", "period": "daily"}),
    ("limit", "PUT", {"limit": 10, "period": "daily", "reset_at": "2026-03-18T18:30:00"}),
    ("credits", "POST", {"amount": "5"}),
    ("credits", "POST", {"amount": 1e16}),
    ("credits", "POST", {"amount": 5, "reason": "r" * 300}),
    ("credits", "POST", {"amount": 5, "reason": "nul\u0000inside"}),
    ("check", "POST", {"required": -1}),
    ("check", "POST", {"required": True}),
    ("check", "POST", {}),
])
def test_admin_and_check_bodies_are_validated(client, route, method, body):
    answer = client.open(f"/v1/customers/c1/features/api/{route}", method=method, json=body,
                         headers=admin())
    assert assert_problem(answer, 400)["errors"]


def test_unknown_routes_and_methods(client):
    assert_problem(client.get("/v1/nothing", headers=admin()), 404)
    answer = client.delete("/v1/usage", headers=admin())
    assert_problem(answer, 405)
    assert "POST" in answer.headers["Allow"]


def test_store_trouble_is_503_with_retry_after(client, app, monkeypatch):
    from carnil_analytics.errors import StorageUnavailable

    def broken(*_args, **_kwargs):
        raise StorageUnavailable("disk I/O error at /secret/path")

    monkeypatch.setattr(app.extensions["carnil.tracker"], "track_event", broken)
    answer = client.post("/v1/usage", headers=admin(),
                         json={"customer_id": "c1", "feature_id": "api", "usage": 1})
    problem = assert_problem(answer, 503)
    assert answer.headers["Retry-After"] == "5"
    assert "/secret/path" not in problem["detail"]


def test_a_configured_metrics_key_may_only_scrape(make_tracker, tmp_path):
    tracker = make_tracker({"database": {"url": f"sqlite:///{tmp_path / 'm.db'}"},
                            "auth": {"admin_key": ADMIN_KEY, "metrics_key": "scraper-key-42"}})
    client = create_app(tracker=tracker).test_client()
    answer = client.get("/metrics", headers=auth("scraper-key-42"))
    assert answer.status_code == 200 and b"carnil_up 1.0" in answer.data
    assert_problem(client.get("/v1/customers/c1/report", headers=auth("scraper-key-42")), 403)
    assert_problem(client.get("/metrics", headers=auth("scraper-key-43")), 401)
