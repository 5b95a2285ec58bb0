"""Hostile input against a real ``serve`` process (issue 9, scenario 5).

A corpus of injection strings (InfluxDB line protocol, InfluxQL, PromQL, SQL, path traversal,
control characters, Unicode look-alikes, 10 KB strings) goes into every id field of every write
route (``customer_id``, ``feature_id``, ``model_id``, ``event_id``/``id`` and the
``Idempotency-Key`` header), into every path segment of every route (``{customer_id}``,
``{feature_id}``, ``{key_id}``) and into the ``model`` query parameter; then malformed JSON and
NDJSON, invalid UTF-8, deep nesting, huge numbers, oversize bodies (also chunked, without a
``Content-Length``) and oversize batches. Every answer must be a 4xx ``application/problem+json``
document, never a 5xx; afterwards ``/metrics`` (scraped with the admin key) holds no new label
value and the SQLite store (opened read-only) holds no new row.

One server serves the whole module; each test compares the store and ``/metrics`` before and
after itself. Requests that ``requests`` refuses to send (control characters in a header or a
raw path) go over a plain socket.

The schemathesis run over the OpenAPI document lives in ``tests/test_api_fuzz.py``; CI runs it
with a small example budget. The larger run is an opt-in target::

    CARNIL_FUZZ_EXAMPLES=500 python -m pytest tests/test_api_fuzz.py
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import sqlite3
from contextlib import closing, contextmanager, suppress
from urllib.parse import quote

import pytest
import requests

from servers import HOST, running_server

PROBLEM = "application/problem+json"
MAX_BODY = 64 * 1024
MAX_BATCH = 50
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}$")
EVENT_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
# Tables whose rows a rejected request must never add to (or change the count of).
TABLES = ("events", "meters", "totals", "credit_ledger", "customers", "labelled_customers",
          "api_keys")
# gunicorn's own limits (its defaults): a longer request line or header field never reaches the
# app and is answered by gunicorn itself (414 / 431, text/html).
GUNICORN_LINE_LIMIT = 4094
GUNICORN_FIELD_LIMIT = 8190
# Label names that carry ids; a hostile request must not add a value to any of them.
ID_LABELS = ("customer", "feature", "model")

HOSTILE = {
    # InfluxDB line protocol
    "lp-tag": "a,b=c d=1",
    "lp-newline": "x\ny=1",
    "lp-space": "a b",
    "lp-escape": "c1\\,x=y",
    "lp-equals": "c1=1",
    # InfluxQL
    "influxql-drop": "'; DROP DATABASE carnil; --",
    "influxql-regex": "/.*/",
    "influxql-quote": 'c1" OR 1=1',
    # PromQL / label values
    "promql-or": '"} or vector(1) #',
    "promql-name": '{__name__=~".+"}',
    "promql-brace": "c1}",
    # SQL
    "sql-or": "' OR '1'='1",
    "sql-drop": "1; DROP TABLE events",
    "sql-comment": "c1'--",
    # path traversal
    "traversal": "../../etc/passwd",
    "traversal-encoded": "%2e%2e%2f",
    "traversal-dots": "..",
    "traversal-backslash": "..\\..\\windows",
    # control characters
    "nul": "c1\x00",
    "escape": "\x1b[31mred",
    "crlf": "c1\r\nX-Injected: 1",
    "tab": "c1\tx",
    "del": "c1\x7f",
    # Unicode look-alikes
    "fullwidth": "\uff41cme",
    "cyrillic": "\u0430cme",
    "zero-width": "ac\u200bme",
    "rtl-override": "acme\u202egnp.exe",
    "bom": "\ufeffacme",
    "combining": "acme\u0301",
    # sizes
    "empty": "",
    "10kb": "a" * 10_240,
    "129": "a" * 129,
    # leading characters the id grammar forbids
    "leading-dash": "-c1",
    "leading-dot": ".c1",
    "leading-slash": "/c1",
}
assert not any(ID_PATTERN.match(value) for value in HOSTILE.values())
# Printable ASCII without spaces is a valid idempotency key (UUIDs, hashes...): only the rest
# must be rejected there.
HOSTILE_EVENT_IDS = {name: value for name, value in HOSTILE.items()
                     if not EVENT_ID_PATTERN.match(value)}
HOSTILE_EVENT_IDS["256"] = "e" * 256


# ------------------------------------------------------------------ the server and its state

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = {"server": {"max_body_bytes": MAX_BODY, "max_batch_events": MAX_BATCH}}
    with running_server(tmp_path_factory.mktemp("hostile"), config) as srv:
        # One legitimate event of each type, so /metrics has label values to begin with.
        assert srv.post("/v1/usage", json={"customer_id": "c1", "feature_id": "api",
                                           "usage": 1}).status_code == 200
        assert srv.post("/v1/ai-usage", json={"customer_id": "c1", "model_id": "m1",
                                              "tokens": 1}).status_code == 200
        srv.spec = srv.get("/openapi.json", key=None).json()
        yield srv
        assert "Traceback" not in srv.stderr_text(), srv.stderr_text()[-5000:]


def row_counts(server) -> dict[str, int]:
    """Rows per table, read from the SQLite file opened read-only."""
    uri = f"file:{server.db_path}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in TABLES}


LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def label_values(server) -> set[tuple[str, str]]:
    """Every (label name, value) of the exposition, scraped with the admin key."""
    answer = server.get("/metrics")
    assert answer.status_code == 200
    pairs = set()
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            pairs.update(LABEL.findall(line.partition("{")[2].rpartition("}")[0]))
    return pairs


@contextmanager
def nothing_recorded(server):
    """The block adds no row to the store and no id label value or route to /metrics."""
    rows, labels = row_counts(server), label_values(server)
    yield
    assert row_counts(server) == rows
    new = label_values(server) - labels
    assert not {(name, value) for name, value in new if name in ID_LABELS}, new
    templates = set(server.spec["paths"]) | {"unmatched"}
    routes = {value for name, value in new if name == "route"}
    assert routes <= templates, routes - templates


def assert_problem(answer, *statuses: int) -> dict:
    """A 4xx problem document (one of ``statuses`` when given)."""
    status = answer.status_code
    assert 400 <= status < 500, (status, answer.text[:500])
    if statuses:
        assert status in statuses, (status, answer.text[:500])
    assert answer.headers["Content-Type"].split(";")[0] == PROBLEM, answer.headers
    body = answer.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# ------------------------------------------------------------------ raw HTTP

def raw_request(server, method: str, target: bytes, headers: dict[bytes, bytes],
                body: bytes = b"", chunks: list[bytes] | None = None):
    """Send bytes as they are (no client-side validation); answer (status, headers, body)."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: " + HOST.encode(),
             b"Authorization: Bearer " + server.admin_key.encode(), b"Connection: close"]
    lines += [name + b": " + value for name, value in headers.items()]
    if chunks is None:
        if b"Content-Length" not in headers:
            lines.append(b"Content-Length: " + str(len(body)).encode())
        payload = body
    else:
        lines.append(b"Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n" % len(c) + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
    with socket.create_connection((HOST, server.port), timeout=15) as sock:
        # The server may answer (413) and close before it has read everything.
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + payload)
        answer = http.client.HTTPResponse(sock, method=method)
        answer.begin()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()


def assert_raw_problem(status, headers, body) -> None:
    assert 400 <= status < 500, (status, body[:500])
    assert headers["content-type"].split(";")[0] == PROBLEM, (status, headers, body[:300])
    assert json.loads(body)["status"] == status


# ------------------------------------------------------------------ id fields in bodies

def usage(**extra) -> dict:
    return {"customer_id": "c1", "feature_id": "api", "usage": 1} | extra


def ai_usage(**extra) -> dict:
    return {"customer_id": "c1", "model_id": "m1", "tokens": 1} | extra


def batch_event(kind: str, **extra) -> dict:
    base = usage() if kind == "usage" else ai_usage()
    return {"type": kind} | base | extra


ID_FIELDS = [("/v1/usage", "customer_id"), ("/v1/usage", "feature_id"),
             ("/v1/ai-usage", "customer_id"), ("/v1/ai-usage", "model_id")]


@pytest.mark.parametrize("route, field", ID_FIELDS)
def test_hostile_ids_in_single_routes_are_rejected(server, route, field):
    make = usage if route == "/v1/usage" else ai_usage
    with nothing_recorded(server):
        for name, value in HOSTILE.items():
            for enforce in ("", "?enforce=true"):
                answer = server.post(route + enforce, json=make(**{field: value}))
                problem = assert_problem(answer, 400)
                assert problem["errors"][0]["loc"] == ["body", field], (name, problem)


@pytest.mark.parametrize("route", ["/v1/usage", "/v1/ai-usage"])
def test_hostile_event_ids_are_rejected(server, route):
    make = usage if route == "/v1/usage" else ai_usage
    with nothing_recorded(server):
        for name, value in HOSTILE_EVENT_IDS.items():
            problem = assert_problem(server.post(route, json=make(event_id=value)), 400)
            assert problem["errors"][0]["loc"] == ["body", "event_id"], (name, problem)


@pytest.mark.parametrize("kind, field", [("usage", "customer_id"), ("usage", "feature_id"),
                                         ("ai_usage", "customer_id"), ("ai_usage", "model_id"),
                                         ("usage", "id"), ("ai_usage", "id")])
def test_hostile_ids_in_batches_reject_the_whole_batch(server, kind, field):
    corpus = HOSTILE_EVENT_IDS if field == "id" else HOSTILE
    with nothing_recorded(server):
        for name, value in corpus.items():
            batch = [batch_event(kind), batch_event(kind, **{field: value}), batch_event(kind)]
            answer = server.post("/v1/events", json=batch)
            assert assert_problem(answer, 400)["index"] == 1, name
            ndjson = "\n".join(json.dumps(e) for e in batch).encode()
            answer = server.post("/v1/events", data=ndjson,
                                 headers={"Content-Type": "application/x-ndjson"})
            assert assert_problem(answer, 400)["index"] == 1, name


def test_hostile_idempotency_keys_are_rejected(server):
    with nothing_recorded(server):
        for name, value in HOSTILE_EVENT_IDS.items():
            encoded = value.encode("utf-8")
            if b"\r\n" in encoded or encoded.strip(b" \t") != encoded or not encoded \
                    or len(encoded) > GUNICORN_FIELD_LIMIT:
                # CRLF ends the header (the rest is the client's own next header line), HTTP
                # strips blanks around a value, "" is no key; 10 KB: see the gunicorn limits test.
                continue
            for route, body in (("/v1/usage", usage()), ("/v1/ai-usage", ai_usage())):
                # Over the socket: requests refuses control characters in header values.
                status, headers, raw = raw_request(
                    server, "POST", route.encode(),
                    {b"Content-Type": b"application/json", b"Idempotency-Key": encoded},
                    json.dumps(body).encode())
                if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", encoded):
                    # Not a valid HTTP field value: gunicorn refuses it before the app.
                    assert status == 400, (name, status, raw[:300])
                else:
                    assert_raw_problem(status, headers, raw)


# ------------------------------------------------------------------ path segments and queries

def hostile_paths(server):
    """(method, concrete path, name) for every templated route × hostile value × segment."""
    for template, methods in server.spec["paths"].items():
        segments = re.findall(r"\{(\w+)\}", template)
        for segment in segments:
            for name, value in HOSTILE.items():
                if value == "..":
                    continue  # the client removes dot segments; sent raw further down
                if name == "leading-slash" and segment != "key_id":
                    continue  # sent by test_a_leading_slash_in_a_path_id_is_rejected
                if len(quote(value, safe="")) > GUNICORN_LINE_LIMIT:
                    continue  # over gunicorn's request-line limit: see the gunicorn limits test
                path = template
                for other in segments:
                    path = path.replace(f"{{{other}}}", quote(value, safe="")
                                        if other == segment else "c1")
                for method in methods:
                    yield method.upper(), path, name


def test_hostile_path_segments_are_rejected(server):
    with nothing_recorded(server):
        count = 0
        for method, path, name in hostile_paths(server):
            body = {"PUT": {"limit": 5, "period": "daily"}, "POST": {"amount": 5}}.get(method)
            if path.endswith("/check"):
                body = {"required": 1}
            answer = server.request(method, path, json=body)
            assert 400 <= answer.status_code < 500, (method, path, name, answer.status_code)
            problem = assert_problem(answer)
            if name == "empty":
                assert answer.status_code in (400, 404, 405), (method, path)  # no such route
            elif "/v1/keys/" not in path:
                assert answer.status_code == 400, (method, path, name)
                assert problem["errors"][0]["loc"][0] == "path", (method, path, problem)
            else:
                assert answer.status_code == 404, (method, path, name)
            count += 1
        assert count > 300


# Raw bytes in the request target, as a hostile client may send them.
RAW_SEGMENTS = [b"../../etc/passwd", b"..%2f..%2fetc%2fpasswd", b"%2e%2e%2f%2e%2e%2f",
                b"c1%00", b"c1%0d%0aX-Injected:%201", b"%ef%bd%81cme", b"%d0%b0cme",
                b"c1%ff", b"%ff%fe", b"a%20b", b"%", b"%zz", b"c1;x=1", b"c1%3Bx=1",
                b"%u0430cme", b"c1%E2%80%AE", b"a" * 200]
# Not valid HTTP (raw non-ASCII in the request line): gunicorn answers 400 before the app.
INVALID_HTTP_SEGMENTS = [b"\xef\xbd\x81cme", b"\xd0\xb0cme", b"c1\xff", b"c1\x00",
                         b"c1\x1b", b"a b"]
RAW_TEMPLATES = [b"/v1/customers/{}/report", b"/v1/customers/c1/features/{}/meter",
                 b"/v1/customers/{}/features/api/limit", b"/v1/customers/{}/features/api/check"]


@pytest.mark.parametrize("template", RAW_TEMPLATES)
def test_raw_hostile_paths_are_4xx_problems(server, template):
    with nothing_recorded(server):
        for segment in RAW_SEGMENTS:
            for method in ("GET", "PUT", "POST"):
                target = template.replace(b"{}", segment)
                status, headers, body = raw_request(
                    server, method, target, {b"Content-Type": b"application/json"},
                    b'{"limit": 5, "period": "daily", "required": 1}')
                assert_raw_problem(status, headers, body)
        for segment in INVALID_HTTP_SEGMENTS:
            status, _, body = raw_request(server, "GET", template.replace(b"{}", segment), {})
            assert 400 <= status < 500, (segment, status, body[:300])


def test_requests_over_gunicorn_limits_get_problem_documents(server):
    """Gunicorn refuses these before the app sees them; its status stands (414, 431, 400),
    its HTML page does not."""
    with nothing_recorded(server):
        answer = server.get("/v1/customers/" + "a" * 10_240 + "/report")
        problem = assert_problem(answer, 414)
        assert problem["title"] == "URI Too Long"
        assert str(GUNICORN_LINE_LIMIT) in problem["detail"]
        answer = server.post("/v1/usage", json=usage(),
                             headers={"Idempotency-Key": "e" * 10_240})
        problem = assert_problem(answer, 431)
        assert str(GUNICORN_FIELD_LIMIT) in problem["detail"]
        status, headers, raw = raw_request(server, "GET", b"/healthz",
                                           {b"X-Broken": b"a\x01b"}, b"")
        assert_raw_problem(status, headers, raw)
        assert status == 400 and json.loads(raw)["detail"] == "the request is not valid HTTP"
    assert server.get("/healthz").status_code == 200  # and the worker serves on


def test_a_leading_slash_in_a_path_id_is_rejected(server):
    with nothing_recorded(server):
        for path in ("/v1/customers/%2Fc1/report", "/v1/customers/c1/features/%2Fapi/meter",
                     "/v1/customers/%2Fc1/features/api/limit"):
            problem = assert_problem(server.get(path), 400)
            assert problem["errors"][0]["loc"][0] == "path", (path, problem)


def test_hostile_model_query_is_rejected(server):
    with nothing_recorded(server):
        for name, value in HOSTILE.items():
            if name == "empty":
                continue  # ?model= : no model filter
            if len(quote(value)) > GUNICORN_LINE_LIMIT:
                continue  # see the gunicorn limits test
            answer = server.get("/v1/customers/c1/ai-usage", params={"model": value})
            problem = assert_problem(answer, 400)
            assert problem["errors"][0]["loc"][0] == "query", (name, problem)


# ------------------------------------------------------------------ malformed bodies

MALFORMED = [
    b"", b"   ", b"{", b"}", b"[", b"[1,", b'{"customer_id": }', b"{'a': 1}", b"nul",
    b'{"customer_id":"c1","feature_id":"api","usage":1,}',
    b'{"customer_id":"c1","feature_id":"api","usage":1} trailing',
    b'{"customer_id":"c1","feature_id":"api","usage":1}{"x":1}',
    b'{"customer_id":"c1","customer_id":"c1","feature_id":"api","usage":"x"}',
    b"\xff\xfe\x00{}", b'{"customer_id":"c\xff1","feature_id":"api","usage":1}',
    b'{"customer_id":"c1","feature_id":"\xed\xa0\x80","usage":1}',  # UTF-8 surrogate
    b'{"customer_id":"\\ud800","feature_id":"api","usage":1}',  # lone surrogate escape
    b'{"customer_id":"c1\\u0000","feature_id":"api","usage":1}',
    b"\xef\xbb\xbf" + b'{"customer_id":"c1 x","feature_id":"api","usage":1}',
    b"[" * 30_000 + b"]" * 30_000, b"{" * 20_000, b'{"a":' * 12_000,
    b'{"customer_id":"c1","feature_id":"api","usage":1,"metadata":' + b"[" * 5000
    + b"]" * 5000 + b"}",
    b'{"customer_id":"c1","feature_id":"api","usage":1,"metadata":{"a":{"b":{"c":"d"}}}}',
    b'"just a string"', b"null", b"true", b"42", b"[]", b"{}", b"[[]]", b"[null]",
]
HUGE_NUMBERS = [
    b"9" * 5000, b"1e999", b"-1e999", b"1e16", b"1e15000", b"NaN", b"Infinity", b"-Infinity",
    b"-0.0000001", b"0x10", b"1_000", b"+1", b".5", b"01", b"1e", b"18446744073709551617",
    b"true", b'"1"', b"null", b"[1]", b'{"$numberLong":"1"}',
]


@pytest.mark.parametrize("route", ["/v1/usage", "/v1/events"])
def test_malformed_json_is_rejected(server, route):
    with nothing_recorded(server):
        for data in MALFORMED:
            answer = server.post(route, data=data, headers={"Content-Type": "application/json"})
            assert_problem(answer, 400, 413)


def test_malformed_ndjson_is_rejected(server):
    good = json.dumps(batch_event("usage")).encode()
    lines = [b"{", b"[1]", b"null", b"\xff", b"[" * 20_000, good + b" " + good,
             b'{"type":"usage"}', b"\x00", good[:-1]]
    with nothing_recorded(server):
        for line in lines:
            for data in (line, good + b"\n" + line + b"\n" + good, good + b"\r\n" + line):
                answer = server.post("/v1/events", data=data,
                                     headers={"Content-Type": "application/x-ndjson"})
                assert_problem(answer, 400)


@pytest.mark.parametrize("field, route", [("usage", "/v1/usage"), ("cost", "/v1/usage"),
                                          ("tokens", "/v1/ai-usage"),
                                          ("input_tokens", "/v1/ai-usage"),
                                          ("cached_tokens", "/v1/ai-usage")])
def test_huge_and_odd_numbers_are_rejected(server, field, route):
    base = usage() if route == "/v1/usage" else ai_usage()
    base.pop(field, None)
    prefix = json.dumps(base)[:-1].encode() + b', "' + field.encode() + b'": '
    with nothing_recorded(server):
        for number in HUGE_NUMBERS + [b"1.5"] * field.endswith("tokens") \
                + [b"10000000000000"] * (field != "usage") + [b"1e10"] * (field == "cost"):
            if number == b"null" and field not in ("usage", "tokens"):
                continue  # an optional field may be null
            answer = server.post(route, data=prefix + number + b"}",
                                 headers={"Content-Type": "application/json"})
            assert_problem(answer, 400)


def test_wrong_content_types_are_415(server):
    body = json.dumps(usage()).encode()
    with nothing_recorded(server):
        for content_type in ("text/plain", "application/xml", "multipart/form-data; boundary=x",
                             "application/x-www-form-urlencoded",
                             "application/jsonx", "../application/json"):
            answer = server.post("/v1/usage", data=body, headers={"Content-Type": content_type})
            assert_problem(answer, 415)


# ------------------------------------------------------------------ oversize

def fresh_request(server, method: str, path: str, **kwargs):
    """A request on a new connection (see test_the_connection_survives_a_413)."""
    with requests.Session() as session:
        session.trust_env = False
        headers = {"Authorization": f"Bearer {server.admin_key}"} | kwargs.pop("headers", {})
        return session.request(method, server.url + path, headers=headers, timeout=15,
                               **kwargs)


def test_oversize_bodies_and_batches_are_413(server):
    with nothing_recorded(server):
        big = [batch_event("usage", metadata={"pad": "x" * 200}) for _ in range(MAX_BATCH)]
        data = json.dumps(big).encode() * 5
        assert len(data) > MAX_BODY
        for method, route in (("POST", "/v1/usage"), ("POST", "/v1/events"),
                              ("PUT", "/v1/customers/c1/features/api/limit"),
                              ("POST", "/v1/customers/c1/features/api/credits"),
                              ("POST", "/v1/customers/c1/features/api/check"),
                              ("POST", "/v1/keys")):
            answer = fresh_request(server, method, route, data=data,
                                   headers={"Content-Type": "application/json"})
            assert_problem(answer, 413)
        for data, content_type in ((b"\n" * (MAX_BODY + 1), "application/x-ndjson"),
                                   (b" " * (10 * MAX_BODY), "application/json"),
                                   (b"[" * 200_000, "application/json")):
            answer = fresh_request(server, "POST", "/v1/events", data=data,
                                   headers={"Content-Type": content_type})
            assert_problem(answer, 413)
        too_many = [batch_event("usage") for _ in range(MAX_BATCH + 1)]
        assert_problem(server.post("/v1/events", json=too_many), 413)
        ndjson = b"\n".join(json.dumps(e).encode() for e in too_many)
        assert_problem(server.post("/v1/events", data=ndjson,
                                   headers={"Content-Type": "application/x-ndjson"}), 413)


def test_the_connection_survives_a_413(server):
    """A refused body of a few times the limit is read off the connection, so the next
    request on it is answered (far larger bodies are not read: gunicorn then closes)."""
    with requests.Session() as session:
        session.trust_env = False
        headers = {"Authorization": f"Bearer {server.admin_key}",
                   "Content-Type": "application/json"}
        for _ in range(3):
            answer = session.post(server.url + "/v1/events", data=b"[" * (3 * MAX_BODY),
                                  headers=headers, timeout=15)
            assert_problem(answer, 413)
            assert session.get(server.url + "/healthz", timeout=15).status_code == 200


def padded_line(event_id: str, size: int) -> bytes:
    """An NDJSON line of exactly ``size`` bytes (newline included)."""
    metadata: dict[str, str] = {}
    line = json.dumps(batch_event("usage", id=event_id)).encode() + b"\n"
    while len(line) < size:
        missing = size - len(line)
        if not metadata:
            missing -= len(b', "metadata": {}')
        key = f"k{len(metadata):02d}"
        filler = min(256, missing - len(f'"{key}": ""') - (2 if metadata else 0))
        metadata[key] = "x" * max(filler, 0)
        line = json.dumps(batch_event("usage", id=event_id, metadata=metadata)).encode() + b"\n"
    assert len(line) == size, (len(line), size)
    return line


def test_oversize_chunked_json_is_413(server):
    with nothing_recorded(server):
        event = json.dumps(batch_event("usage")).encode()
        chunks = [b"[" + event] + [b"," + event] * (2 * MAX_BODY // len(event)) + [b"]"]
        status, headers, body = raw_request(server, "POST", b"/v1/events",
                                            {b"Content-Type": b"application/json"},
                                            chunks=chunks)
        assert_raw_problem(status, headers, body)
        assert status == 413, body


def test_oversize_chunked_ndjson_records_nothing(tmp_path):
    config = {"server": {"max_body_bytes": MAX_BODY, "max_batch_events": MAX_BATCH}}
    with running_server(tmp_path, config) as srv:
        lines = [padded_line(f"chunked-{i}", 2048) for i in range(40)]
        assert len(b"".join(lines[:32])) == MAX_BODY
        status, headers, body = raw_request(srv, "POST", b"/v1/events",
                                            {b"Content-Type": b"application/x-ndjson"},
                                            chunks=[b"".join(lines[:32]), b"".join(lines[32:])])
        events = row_counts(srv)["events"]
        assert (status, events) == (413, 0), (status, body, events)


def test_a_lying_content_length_is_not_a_5xx(server):
    with nothing_recorded(server):
        status, headers, body = raw_request(
            server, "POST", b"/v1/usage",
            {b"Content-Type": b"application/json", b"Content-Length": b"99999999999999999999"},
            json.dumps(usage()).encode())
        assert 400 <= status < 500, (status, body[:300])


# ------------------------------------------------------------------ the module as a whole

def test_the_service_is_still_healthy_and_counts_only_the_seed_events(server):
    assert server.get("/healthz", key=None).status_code == 200
    assert server.get("/readyz", key=None).status_code == 200
    assert row_counts(server)["events"] == 2
    labels = label_values(server)
    assert {v for n, v in labels if n == "customer"} == {"c1"}
    assert {v for n, v in labels if n == "model"} == {"m1"}
    assert {v for n, v in labels if n == "feature"} <= {"api", "ai_tokens", "ai_cost"}
    statuses = {status for _, _, status in server.responses}
    assert not {s for s in statuses if s >= 500}, statuses
