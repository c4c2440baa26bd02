"""Services under compose profiles in the planner: a service the base file puts only under
inactive profiles is known (its saved row kept) but not placed by any strategy, counted in no
GPU's load and named by no warning; once its profile is active (``COMPOSE_PROFILES`` or
``GPUCONFIG_COMPOSE_PROFILES``) it is planned like any other."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from applies.selectors import apply_targets
from assignments import planner
from assignments.files import project
from assignments.models import Assignment
from assignments.selectors import InactiveService, config_current, config_preview, planning_input
from assignments.services import config_save
from tests.unit.test_compose_forms import gateway  # noqa: F401 - fixture
from tests.unit.test_compose_stack import no_tools  # noqa: F401 - fixture

NOTE = (
    "ai-llm: under profile vlm, not active: not placed; "
    "set COMPOSE_PROFILES or GPUCONFIG_COMPOSE_PROFILES."
)


@pytest.fixture(params=["COMPOSE_PROFILES", "GPUCONFIG_COMPOSE_PROFILES"])
def vlm_active(request, gateway, settings, monkeypatch):  # noqa: F811
    """The `vlm` profile made active one way or the other."""
    if request.param == "COMPOSE_PROFILES":
        monkeypatch.setenv("COMPOSE_PROFILES", "vlm")
    else:
        settings.GPUCONFIG_COMPOSE_PROFILES = "vlm"
    return request.param


def _planned_mb() -> dict[int, int]:
    """The services' planned VRAM per GPU, as saved."""
    out: dict[int, int] = {}
    for d in planning_input().services:
        out[d.current_gpu] = out.get(d.current_gpu, 0) + d.effective_mb
    return out


def _names_in(messages) -> bool:
    return any("ai-llm" in m for m in messages)


@pytest.mark.parametrize("strategy", planner.strategy_names())
def test_a_service_under_an_inactive_profile_is_placed_by_no_strategy(
    gateway,  # noqa: F811
    strategy,
):
    plan, data = config_preview(strategy=strategy)
    assert "ai-llm" not in {p.service for p in plan.placements}
    assert not _names_in(i.message for i in plan.issues)
    assert "ai-llm" not in {d.name for d in data.services}
    assert data.inactive == (InactiveService("ai-llm", ("vlm",)),)
    # Known all the same: in the catalog, its saved row untouched.
    assert "ai-llm" in data.catalog and data.assignments["ai-llm"].gpu_index == 0


def test_an_inactive_service_counts_in_no_gpus_load_and_no_saved_warning(
    gateway,  # noqa: F811
    settings,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    # The guide's layout keeps ai-llm (21.7 GB) saved on GPU 0.
    loaded = _planned_mb()
    monkeypatch.setenv("COMPOSE_PROFILES", "vlm")
    with_llm = _planned_mb()
    llm_mb = Assignment.objects.get(service__name="ai-llm").service.vram_required_mb
    assert with_llm[0] - loaded[0] == llm_mb
    assert _names_in(config_current()["warnings"])  # active: its isolation is checked
    monkeypatch.delenv("COMPOSE_PROFILES")
    # Even a fallback saved on its row (its GPU lost) is not reported while it is inactive.
    Assignment.objects.filter(service__name="ai-llm").update(
        fallback_since=timezone.now(), lost_gpu_uuid="GPU-gone"
    )

    current = config_current()
    assert not _names_in(current["warnings"])
    assert "ai-llm" not in {a["service"] for a in current["assignments"]}
    with django_capture_on_commit_callbacks(execute=True):
        result = config_save(strategy="vram_based")
    assert not _names_in(result.warnings)
    assert "ai-llm" not in {e["service"] for e in result.version.assignments}
    # No strategy moved it: the row keeps what was saved before.
    assert Assignment.objects.get(service__name="ai-llm").gpu_index == 0


def test_apply_leaves_an_inactive_service_alone(gateway):  # noqa: F811
    assert "ai-llm" not in {t.service for t in apply_targets()}


@pytest.mark.parametrize("strategy", planner.strategy_names())
def test_a_service_whose_profile_is_active_is_planned(vlm_active, strategy):
    plan, data = config_preview(strategy=strategy)
    assert data.inactive == ()
    assert "ai-llm" in {d.name for d in data.services}
    assert "ai-llm" in {p.service for p in plan.placements}
    assert "ai-llm" in {t.service for t in apply_targets()}


def test_without_a_base_file_every_service_is_planned(reference_inventory, settings):
    settings.GPUCONFIG_COMPOSE_FILE = ""
    data = planning_input()
    assert data.inactive == ()
    assert {d.name for d in data.services} == set(data.catalog)


def test_the_page_lists_inactive_services_apart_with_the_fix(gateway, staff_user):  # noqa: F811
    browser = Client()
    browser.force_login(staff_user)
    page = browser.get("/settings/gpu/").content.decode()
    assert page.count(NOTE) == 2  # the plan and the services panel
    assert 'id="row-ai-llm"' not in page and 'id="svc-ai-llm"' not in page


def test_the_page_has_no_inactive_list_once_the_profile_is_active(vlm_active, staff_user):
    browser = Client()
    browser.force_login(staff_user)
    page = browser.get("/settings/gpu/").content.decode()
    assert "not active: not placed" not in page
    assert 'id="row-ai-llm"' in page


def test_planning_reads_the_base_once_while_its_files_are_unchanged(
    gateway,  # noqa: F811
    monkeypatch,
):
    """Request paths plan often: the stack is read from the file once, not per request, and
    no compose tool is run (``no_tools``: none is on PATH)."""
    reads = []
    real = project.stack_read
    monkeypatch.setattr(project, "stack_read", lambda *a, **k: reads.append(a) or real(*a, **k))
    project._stack_cache.clear()
    for _ in range(3):
        planning_input()
    assert len(reads) == 1
    gateway.write_text(gateway.read_text().replace('profiles: ["vlm"]', "profiles: []"))
    assert planning_input().inactive == ()
    assert len(reads) == 2


def test_the_saved_configuration_answer_follows_a_change_of_profiles(
    gateway,  # noqa: F811
    settings,
    staff_client,
):
    """The API's cached read of the saved configuration is rebuilt when the active profiles
    change, not kept from before."""

    def services() -> set[str]:
        response = staff_client.get("/api/system/gpu-config")
        assert response.status_code == 200, response.content
        return {a["service"] for a in response.json()["assignments"]}

    assert "ai-llm" not in services()
    settings.GPUCONFIG_COMPOSE_PROFILES = "vlm"
    assert "ai-llm" in services()
