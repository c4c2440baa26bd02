"""The OpenAPI schema, fuzzed with schemathesis through the WSGI app: no input gets a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from gpuconfig_site.wsgi import application
from tests.conftest import API_KEY

# The schema as /api/schema/ serves it (to a signed-in client: reading it needs an account),
# called through the WSGI app.
schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
schema.app = application

# Apply talks to the container engine; it is exercised against the real engine in
# tests/integration. Everything else is fuzzed here.
fuzzed = schema.exclude(path_regex=r"/apply$")


@pytest.fixture
def _inventory(reference_inventory):
    """Calls go through the real WSGI handler inside the test's transaction: like Django's test
    client, keep it from closing the connection at the end of each request."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield reference_inventory
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.django_db
@fuzzed.parametrize()
@hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error(case, _inventory, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/gpuconfig-test.sock")
    response = case.call(headers={"X-API-Key": API_KEY})
    case.validate_response(response, checks=[not_a_server_error])


# The reads, held to the schema both ways: what the schema allows is accepted, what it forbids
# (a value outside an enum or a bound) is refused, and every answer has the documented status
# and shape. A seeded, short run, so a drift between the schema and the views fails here.
reads = schema.include(method="GET")


@pytest.mark.django_db
@reads.parametrize()
@hsettings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_reads_do_what_the_schema_says(case, _inventory, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/gpuconfig-test.sock")
    response = case.call(headers={"X-API-Key": API_KEY})
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
            positive_data_acceptance,
        ],
    )
