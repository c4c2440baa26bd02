"""The cached configuration read (``GET /api/system/gpu-config``): served from the cache while
nothing changed, never stale after a save, a catalog edit, a scan or a base file change."""

from __future__ import annotations

import os

import pytest
import yaml

from assignments.models import AiService, Assignment
from gpus.models import GpuProcess, GpuSample, ServiceVramSample
from gpus.services import gpu_scan_run

pytestmark = pytest.mark.django_db

URL = "/api/system/gpu-config"


def _assigned(client) -> dict[str, tuple]:
    body = client.get(URL).json()
    return {a["service"]: (a["gpu_index"], a["vram_budget_override"]) for a in body["assignments"]}


def test_an_unchanged_configuration_is_answered_from_the_cache(
    staff_client, reference_inventory, django_assert_num_queries
):
    first = staff_client.get(URL).json()
    with django_assert_num_queries(0):
        again = staff_client.get(URL).json()
    assert again == first


def test_a_save_is_visible_on_the_next_read(staff_client, reference_inventory):
    assert _assigned(staff_client)["ai-clip"] == (0, None)
    res = staff_client.put(
        URL, {"assignments": [{"service": "ai-clip", "gpu_index": 1}]}, format="json"
    )
    assert res.status_code == 200
    assert _assigned(staff_client)["ai-clip"] == (1, None)


def test_a_catalog_edit_is_visible_on_the_next_read(staff_client, reference_inventory):
    before = staff_client.get(URL).json()["warnings"]
    llm = AiService.objects.get(name="ai-llm")
    llm.vram_required_mb = 1000
    llm.save()
    after = staff_client.get(URL).json()["warnings"]
    assert after != before


def test_a_lost_gpu_is_visible_on_the_next_read(staff_client, reference_inventory):
    assert _assigned(staff_client)["ai-enrichment"][0] == 1
    entries = yaml.safe_load(reference_inventory.read_text())
    reference_inventory.write_text(yaml.safe_dump([e for e in entries if e["index"] != 1]))
    gpu_scan_run()
    assert _assigned(staff_client)["ai-enrichment"][0] != 1


def test_a_base_file_budget_is_visible_on_the_next_read(
    staff_client, reference_inventory, settings, tmp_path
):
    """The base compose file's VRAM_BUDGET_GB is ai-enrichment's default: a changed file is
    read again."""
    base = tmp_path / "compose.yml"

    def write(budget: str) -> None:
        base.write_text(
            yaml.safe_dump(
                {
                    "services": {
                        "ai-enrichment": {
                            "image": "busybox",
                            "environment": {"VRAM_BUDGET_GB": budget},
                        }
                    }
                }
            )
        )

    write("6.8")
    settings.GPUCONFIG_COMPOSE_FILE = str(base)
    first = staff_client.get(URL).json()["warnings"]
    write("1.0")
    os.utime(base, ns=(base.stat().st_atime_ns, base.stat().st_mtime_ns + 10**9))
    assert staff_client.get(URL).json()["warnings"] != first


def test_a_deleted_configuration_row_is_visible_on_the_next_read(staff_client, reference_inventory):
    """The read model follows deletes of this app's rows too (the receivers listen to each of
    the app's models)."""
    assert _assigned(staff_client)["ai-clip"] == (0, None)
    Assignment.objects.filter(service__name="ai-clip").delete()
    assert _assigned(staff_client)["ai-clip"] == (None, None)  # listed, with no saved GPU


def test_deletes_elsewhere_stay_fast(reference_inventory, django_assert_num_queries):
    """No receiver listens to every model's deletes: a scan's replacement of the GPU processes
    and its pruning of samples are one DELETE each, not a read of every row removed followed
    by a delete of their ids (and a signal per row)."""
    assert GpuSample.objects.exists()
    for model in (GpuProcess, GpuSample, ServiceVramSample):
        with django_assert_num_queries(1):
            model.objects.all().delete()
