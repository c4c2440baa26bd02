"""Input at the edges: each endpoint's input serializer refuses bad input with one sentence
(400 ``{"detail": ...}``) before any service runs, the schema describes those serializers, and
every refusal, wherever it is raised, is an ``ApplicationError``."""

from __future__ import annotations

import json

import pytest

from assignments import planner
from assignments.files.catalog import OfferInvalid
from assignments.files.tools import UnknownTool
from assignments.models import ConfigVersion, ServiceRule
from assignments.selectors import UnknownNeeds, UnknownStrategyError, config_preview
from gpuconfig_site.api import InputInvalid
from gpuconfig_site.errors import ApplicationError
from gpus.services import GpuIndexTaken
from tests.conftest import saved_state

BASE = "/api/system/gpu-config"


def _put(client, url, body):
    return client.put(url, json.dumps(body), content_type="application/json")


@pytest.mark.parametrize(
    "refusal",
    [UnknownStrategyError, UnknownTool, OfferInvalid, GpuIndexTaken, UnknownNeeds, InputInvalid],
)
def test_every_refusal_is_an_application_error(refusal):
    assert issubclass(refusal, ApplicationError)


@pytest.mark.django_db
def test_an_unknown_strategy_is_refused_as_data_and_still_caught_as_the_planner_s(
    reference_inventory,
):
    with pytest.raises(planner.UnknownStrategy) as refused:
        config_preview(strategy="fastest")
    assert isinstance(refused.value, ApplicationError)
    assert refused.value.extra == {"code": "unknown_strategy", "field": "strategy"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"assignments": {"ai-llm": 0}},
            "assignments must be a list of {service, gpu_index, vram_budget_override}, not dict.",
        ),
        ([], 'The body must be a JSON object like {"strategy": ..., "assignments": [...]}.'),
        ({"strategy": "manual", "colour": "red"}, "Unknown field(s): 'colour'."),
        ({}, "Nothing to save: give a strategy, assignments, or both."),
    ],
)
def test_a_config_put_s_shape_is_refused_at_the_edge(
    staff_client, reference_inventory, settings, body, detail
):
    before = saved_state(settings)
    res = _put(staff_client, BASE, body)
    assert (res.status_code, res.json()) == (400, {"detail": detail})
    assert saved_state(settings) == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, 'The body must be a JSON object like {"rules": [...]}.'),
        ([], 'The body must be a JSON object like {"rules": [...]}.'),
        ({"rules": [], "extra": 1}, "Unknown field(s): 'extra'."),
        (
            {"rules": "ai-llm"},
            "rules must be a list of {service, pin_gpu_uuid, exclusive, never_with, priority}, "
            "not str.",
        ),
    ],
)
def test_a_rules_put_s_shape_is_refused_at_the_edge(
    staff_client, reference_inventory, body, detail
):
    _put(staff_client, f"{BASE}/rules", {"rules": [{"service": "ai-llm", "exclusive": True}]})
    res = _put(staff_client, f"{BASE}/rules", body)
    assert (res.status_code, res.json()) == (400, {"detail": detail})
    assert list(ServiceRule.objects.values_list("service__name", "exclusive")) == [("ai-llm", True)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "params", "detail"),
    [
        (f"{BASE}/versions", {"limit": "abc"}, "limit must be a whole number from 1 to 1000."),
        (f"{BASE}/versions", {"limit": "0"}, "limit must be a whole number from 1 to 1000."),
        (
            "/api/system/gpu/history",
            {"offset": "-1"},
            "offset must be a whole number from 0 to 1000000000.",
        ),
        (
            f"{BASE}/preview",
            {},
            "Give ?strategy= one of: manual, vram_based, latency_optimized, isolation_first, "
            "balanced.",
        ),
        (
            f"{BASE}/preview",
            {"strategy": "balanced", "needs": ""},
            "needs must be one of: measured, catalog (got '').",
        ),
        (
            f"{BASE}/compose",
            {"tool": "nope"},
            "Unknown compose tool 'nope'; expected one of: auto, docker-compose-v2, "
            "podman-compose, docker-compose-v1.",
        ),
    ],
)
def test_a_query_outside_the_schema_is_refused_in_one_sentence(
    staff_client, reference_inventory, url, params, detail
):
    res = staff_client.get(url, params)
    assert (res.status_code, res.json()) == (400, {"detail": detail})


@pytest.mark.django_db
def test_an_import_with_a_dry_run_that_is_not_a_boolean_changes_nothing(
    staff_client, reference_inventory, settings
):
    exported = staff_client.get(f"{BASE}/export").content.decode()
    before = (saved_state(settings), ConfigVersion.objects.count())
    res = staff_client.post(
        f"{BASE}/import?dry_run=maybe", exported, content_type="application/yaml"
    )
    assert (res.status_code, res.json()) == (400, {"detail": "dry_run: Must be a valid boolean."})
    assert (saved_state(settings), ConfigVersion.objects.count()) == before


@pytest.mark.django_db
def test_the_schema_describes_the_write_endpoints_input_serializers(staff_client):
    schema = staff_client.get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]

    def body(path: str) -> dict:
        ref = schema["paths"][path]["put"]["requestBody"]["content"]["application/json"]
        return components[ref["schema"]["$ref"].rsplit("/", 1)[1]]

    config = body(BASE)
    assert set(config["properties"]) == {"strategy", "assignments"}
    assert config["properties"]["assignments"]["items"] == {
        "$ref": "#/components/schemas/AssignmentRequest"
    }
    rules = body(f"{BASE}/rules")
    assert rules["required"] == ["rules"]
    assert rules["properties"]["rules"]["items"] == {"$ref": "#/components/schemas/RuleRequest"}
