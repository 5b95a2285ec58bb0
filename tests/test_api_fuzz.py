"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis): no
input yields a 5xx, and every answer matches the document (status, content type, schema).

CI runs a bounded number of examples per operation; set CARNIL_FUZZ_EXAMPLES for a longer
run, e.g. ``CARNIL_FUZZ_EXAMPLES=500 pytest tests/test_api_fuzz.py``.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from carnil_analytics.api import create_app

ADMIN_KEY = "fuzz-admin-key-0123456789"
EXAMPLES = int(os.environ.get("CARNIL_FUZZ_EXAMPLES", "30"))
# Not "schema-valid data must be accepted": the document cannot say everything a request is
# checked for (the timestamp window, tokens = input + output...), and such requests rightly
# answer 400.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@pytest.fixture
def api_schema(make_tracker):
    app = create_app(tracker=make_tracker({"auth": {"admin_key": ADMIN_KEY}}))
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_the_api_honours_its_document(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, checks=CHECKS)
