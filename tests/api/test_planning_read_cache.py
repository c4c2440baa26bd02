"""The cached planning input behind ``/gpu-config/status``, ``/gpu-config/services`` and the
page: served from the cache while nothing changed, never stale after a save, a catalog edit,
a rule edit or a scan."""

from __future__ import annotations

import pytest
import yaml

from applies.live import live_refresh
from assignments.models import AiService, Assignment, ServiceRule
from assignments.selectors import planning_input, planning_input_cached
from gpus.services import gpu_scan_run

pytestmark = pytest.mark.django_db

SERVICES = "/api/system/gpu-config/services"
STATUS = "/api/system/gpu-config/status"


@pytest.fixture
def engine_state_stored(settings, reference_inventory):
    settings.GPUCONFIG_CONTAINER_RUNTIME = "tests.api.test_service_state_reads.OnGpuZeroRuntime"
    live_refresh()
    settings.GPUCONFIG_CONTAINER_RUNTIME = "tests.api.test_service_state_reads.UntouchableRuntime"


def _saved(client, path=SERVICES) -> dict[str, int | None]:
    res = client.get(path)
    assert res.status_code == 200, res.content[:500]
    return {s["name"]: s["assigned_gpu_index"] for s in res.json()["services"]}


def test_the_cached_planning_input_equals_a_fresh_one(reference_inventory):
    for needs in (None, "catalog", "measured"):
        cached = planning_input_cached(needs=needs)
        again = planning_input_cached(needs=needs)
        fresh = planning_input(needs=needs)
        for data in (cached, again):
            assert data.services == fresh.services
            assert data.gpus == fresh.gpus
            assert data.rules == fresh.rules
            assert data.needs == fresh.needs
            assert set(data.assignments) == set(fresh.assignments)


def test_an_unchanged_configuration_reads_no_planning_rows(
    engine_state_stored, key_client, django_assert_max_num_queries
):
    first = key_client.get(SERVICES).json()
    # Left: the latest apply run and the last outcomes (apply runs are not cached).
    with django_assert_max_num_queries(2):
        again = key_client.get(SERVICES).json()
    assert again == first


@pytest.mark.parametrize("path", [SERVICES, STATUS])
def test_a_save_is_visible_on_the_next_read(engine_state_stored, staff_client, path):
    assert _saved(staff_client, path)["ai-clip"] == 0
    res = staff_client.put(
        "/api/system/gpu-config",
        {"assignments": [{"service": "ai-clip", "gpu_index": 1}]},
        format="json",
    )
    assert res.status_code == 200
    assert _saved(staff_client, path)["ai-clip"] == 1


def test_a_row_saved_outside_the_api_is_visible_on_the_next_read(engine_state_stored, staff_client):
    assert _saved(staff_client)["ai-clip"] == 0
    assignment = Assignment.objects.get(service__name="ai-clip")
    assignment.gpu_index = 1
    assignment.save()
    assert _saved(staff_client)["ai-clip"] == 1


def test_a_disabled_service_is_gone_on_the_next_read(engine_state_stored, staff_client):
    assert "ai-clip" in _saved(staff_client)
    clip = AiService.objects.get(name="ai-clip")
    clip.enabled = False
    clip.save()
    assert "ai-clip" not in _saved(staff_client)


def test_a_new_rule_is_in_the_next_planning_input(reference_inventory):
    assert planning_input_cached().rules == ()
    ServiceRule.objects.create(service=AiService.objects.get(name="ai-llm"), exclusive=True)
    assert [r.service for r in planning_input_cached().rules] == ["ai-llm"]


def test_a_lost_gpu_is_visible_on_the_next_read(
    engine_state_stored, reference_inventory, staff_client
):
    assert _saved(staff_client)["ai-enrichment"] == 1
    entries = yaml.safe_load(reference_inventory.read_text())
    reference_inventory.write_text(yaml.safe_dump([e for e in entries if e["index"] != 1]))
    gpu_scan_run()
    assert _saved(staff_client)["ai-enrichment"] != 1


def test_the_page_shows_a_save_on_the_next_render(client, staff_user, reference_inventory):
    client.force_login(staff_user)
    client.get("/settings/gpu/")
    clip = AiService.objects.get(name="ai-clip")
    clip.display_name = "Renamed in the catalog"
    clip.save()
    assert "Renamed in the catalog" in client.get("/settings/gpu/").content.decode()
