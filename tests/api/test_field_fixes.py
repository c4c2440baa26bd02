"""What a new user hit on a fresh box: a PUT that kept an old budget, a lowered budget that
outlived its GPU, "Revert to VRAM-Based" planning from saved overrides, and an apply that
answered no warnings while the saved configuration had one."""

from __future__ import annotations

import pytest

from applies.live import demo_runtime_enable
from assignments.models import Assignment
from gpus.models import Gpu

pytestmark = pytest.mark.django_db

URL = "/api/system/gpu-config"
NO_ENGINE = "unix:///nonexistent/gpuconfig-test.sock"


@pytest.fixture
def first_scan(simulated_gpus):
    """The reference hardware seen for the first time: its plan is saved as it comes (on the
    4 GB card ai-enrichment's budget is lowered to 2.3 GB so that it fits)."""
    from gpus.services import gpu_scan_run

    assert gpu_scan_run()["error"] is None
    return simulated_gpus


def saved() -> dict[str, tuple[int | None, float | None]]:
    return {
        a.service.name: (a.gpu_index, a.vram_budget_override)
        for a in Assignment.objects.select_related("service")
    }


def placement_body(**budgets: float) -> list[dict]:
    """The saved placement as a PUT's assignments, with no budgets except ``budgets``."""
    return [
        {"service": name, "gpu_index": gpu}
        | ({"vram_budget_override": budgets[name]} if name in budgets else {})
        for name, (gpu, _budget) in saved().items()
    ]


def test_the_first_scan_lowers_enrichment_for_the_small_gpu(first_scan):
    """The starting point of the tests below, as the field saw it."""
    assert saved()["ai-enrichment"] == (1, 2.3)
    row = Assignment.objects.get(service__name="ai-enrichment")
    assert row.budget_lowered_for_uuid == Gpu.objects.get(index=1).uuid


def test_a_put_without_a_budget_saves_none(first_scan, staff_client):
    """A PUT replaces: an omitted ``vram_budget_override`` means none, not "keep the old one"."""
    res = staff_client.put(URL, {"assignments": placement_body()}, format="json")

    assert res.status_code == 200, res.json()
    assert saved()["ai-enrichment"] == (1, None)
    body = staff_client.get(URL).json()
    assert {a["service"]: a["vram_budget_override"] for a in body["assignments"]} == dict.fromkeys(
        saved()
    )


def test_a_lowered_budget_goes_when_the_service_moves_where_its_full_need_fits(
    first_scan, staff_client
):
    """The page sends the budget back as shown (2.3); moved to GPU 0, with ai-llm taken off it,
    ai-enrichment's full 6.8 GB fits there: the lowered budget goes, and the answer says so."""
    body = placement_body(**{"ai-enrichment": 2.3})
    for item in body:
        if item["service"] == "ai-enrichment":
            item["gpu_index"] = 0
        if item["service"] == "ai-llm":
            item["gpu_index"] = None

    res = staff_client.put(URL, {"assignments": body}, format="json")

    assert res.status_code == 200, res.json()
    assert saved()["ai-enrichment"] == (0, None)
    assert Assignment.objects.get(service__name="ai-enrichment").budget_lowered_for_uuid == ""
    [notice] = res.json()["notices"]
    assert notice.startswith("ai-enrichment: the VRAM budget of 2.3 GB was lowered to fit")
    assert "runs at its own budget again" in notice


def test_a_lowered_budget_stays_where_the_full_need_does_not_fit(first_scan, staff_client):
    """On GPU 0 beside ai-llm the full need does not fit: the budget is kept (and warned)."""
    body = placement_body(**{"ai-enrichment": 2.3})
    for item in body:
        if item["service"] == "ai-enrichment":
            item["gpu_index"] = 0

    res = staff_client.put(URL, {"assignments": body}, format="json")

    assert res.status_code == 200, res.json()
    assert saved()["ai-enrichment"] == (0, 2.3)
    assert res.json()["notices"] == []


def test_a_budget_the_user_typed_is_the_users_own(first_scan, staff_client):
    """A budget other than the lowered one is the user's: it moves with the service."""
    body = placement_body(**{"ai-enrichment": 3.0})
    res = staff_client.put(URL, {"assignments": body}, format="json")
    assert res.status_code == 200, res.json()
    assert Assignment.objects.get(service__name="ai-enrichment").budget_lowered_for_uuid == ""
    for item in body:
        if item["service"] == "ai-enrichment":
            item["gpu_index"] = 0
        if item["service"] == "ai-llm":
            item["gpu_index"] = None
    res = staff_client.put(URL, {"assignments": body}, format="json")
    assert saved()["ai-enrichment"] == (0, 3.0)
    assert res.json()["notices"] == []


def test_the_page_says_when_a_lowered_budget_went(first_scan, client, staff_user):
    client.force_login(staff_user)
    data = {"strategy": "manual", "budget-ai-enrichment": "2.3"}
    for name, (gpu, _budget) in saved().items():
        data[f"gpu-{name}"] = "" if gpu is None else str(gpu)
    data["gpu-ai-enrichment"] = "0"
    data["gpu-ai-llm"] = ""

    response = client.post("/settings/gpu/save/", data, HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    assert saved()["ai-enrichment"] == (0, None)
    assert "runs at its own budget again" in response.content.decode()


def test_vram_based_plans_from_the_catalog_not_from_saved_overrides(first_scan, staff_client):
    """With a manual 2.0 GB budget saved, the VRAM-Based preview and its save are the
    recommended configuration: what a fresh box with no overrides gets."""
    fresh = staff_client.get(f"{URL}/preview?strategy=vram_based").json()
    body = placement_body(**{"ai-enrichment": 2.0})
    staff_client.put(URL, {"strategy": "manual", "assignments": body}, format="json")
    assert saved()["ai-enrichment"] == (1, 2.0)

    preview = staff_client.get(f"{URL}/preview?strategy=vram_based").json()

    assert preview["proposed_assignments"] == fresh["proposed_assignments"]
    res = staff_client.put(URL, {"strategy": "vram_based"}, format="json")
    assert res.status_code == 200, res.json()
    assert [
        {"service": a["service"], "gpu_index": a["gpu_index"], "budget": a["vram_budget_override"]}
        for a in res.json()["assignments"]
    ] == [
        {"service": p["service"], "gpu_index": p["gpu_index"], "budget": p["vram_budget_override"]}
        for p in fresh["proposed_assignments"]
    ]


def test_apply_answers_the_saved_configurations_warnings(
    reference_inventory, staff_client, settings, monkeypatch
):
    """The guide's layout is over capacity on both GPUs: POST /apply says so, as GET does."""
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    settings.GPUCONFIG_SIMULATED_RUNTIME_STEP = 0
    demo_runtime_enable()
    saved_warnings = staff_client.get(URL).json()["warnings"]
    assert saved_warnings, "the guide's layout is over capacity"

    res = staff_client.post(f"{URL}/apply")

    assert res.status_code == 202, res.json()
    assert res.json()["warnings"][: len(saved_warnings)] == saved_warnings
    codes = [w["code"] for w in res.json()["warning_details"]]
    saved_codes = [w["code"] for w in staff_client.get(URL).json()["warning_details"]]
    assert "over_capacity" in saved_codes, saved_codes
    assert codes[: len(saved_codes)] == saved_codes
