"""Input at the edges: numbers too large for a float, and megabyte strings, are refused with a
400 that names the input without sending it all back."""

from __future__ import annotations

import json

import pytest

from assignments.models import Assignment, ConfigVersion

pytestmark = pytest.mark.django_db

URL = "/api/system/gpu-config"
HUGE = "x" * 1_000_000


def _put(client, body):
    return client.put(URL, json.dumps(body), content_type="application/json")


def test_a_budget_of_400_nines_is_a_400_not_a_server_error(staff_client, reference_inventory):
    before = list(Assignment.objects.values_list("gpu_index", "vram_budget_override"))
    versions = ConfigVersion.objects.count()
    body = (
        '{"assignments": [{"service": "ai-enrichment", "gpu_index": 1, '
        f'"vram_budget_override": {"9" * 400}}}]}}'
    )
    res = staff_client.put(URL, body, content_type="application/json")
    assert res.status_code == 400, res.content[:300]
    detail = res.json()["detail"]
    assert "more than the 1024 GB limit" in detail
    assert len(detail) < 300
    assert list(Assignment.objects.values_list("gpu_index", "vram_budget_override")) == before
    assert ConfigVersion.objects.count() == versions


@pytest.mark.parametrize(
    "body",
    [
        {"strategy": HUGE},
        {"assignments": [{"service": HUGE, "gpu_index": 0}]},
        {"assignments": [{"service": "ai-llm", "gpu_index": HUGE}]},
        {
            "assignments": [
                {"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": HUGE}
            ]
        },
        {"assignments": [{"service": "ai-llm", "gpu_index": 0, HUGE: 1}]},
        {"strategy": "manual", HUGE: 1},
    ],
    ids=["strategy", "service", "gpu_index", "budget", "assignment-field", "body-field"],
)
def test_a_megabyte_of_input_is_refused_without_being_echoed_whole(
    staff_client, reference_inventory, body
):
    res = _put(staff_client, body)
    assert res.status_code == 400
    detail = res.json()["detail"]
    assert "xxxxxxxxxx" in detail  # the input is named ...
    assert len(res.content) < 1000  # ... but not sent back whole
    assert "characters)" in detail


def test_a_megabyte_strategy_in_the_preview_is_cut_too(staff_client, reference_inventory):
    res = staff_client.get("/api/system/gpu-config/preview", {"strategy": "y" * 4000})
    assert res.status_code == 400
    assert len(res.content) < 1000


def test_the_page_does_not_echo_a_megabyte_strategy(client, staff_user, reference_inventory):
    client.force_login(staff_user)
    res = client.post("/settings/gpu/save/", {"strategy": HUGE}, HTTP_HX_REQUEST="true")
    assert res.status_code == 422
    assert HUGE[:1000] not in res.content.decode()


@pytest.mark.parametrize("tool", ["", "nope", "docker-compose-v3"])
def test_a_compose_tool_outside_the_schemas_enum_is_a_400(staff_client, reference_inventory, tool):
    res = staff_client.get("/api/system/gpu-config/compose", {"tool": tool})
    assert res.status_code == 400
    assert "expected one of: auto" in res.json()["detail"]


def test_the_history_bounds_in_the_schema_are_the_ones_enforced(staff_client, db):
    params = {
        p["name"]: p["schema"]
        for p in staff_client.get("/api/schema/?format=json").json()["paths"][
            "/api/system/gpu/history"
        ]["get"]["parameters"]
    }
    assert params["limit"]["minimum"] == 1
    assert staff_client.get("/api/system/gpu/history", {"limit": 0}).status_code == 400
    assert staff_client.get("/api/system/gpu/history", {"limit": 1}).status_code == 200
    top = params["limit"]["maximum"]
    assert staff_client.get("/api/system/gpu/history", {"limit": top}).status_code == 200
    assert staff_client.get("/api/system/gpu/history", {"limit": top + 1}).status_code == 400
