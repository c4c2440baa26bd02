"""Periodic scans on a real Celery worker and beat against the real Redis: the inventory
follows the hardware, a lost GPU triggers the fallback, its return restores the assignment."""

from __future__ import annotations

import pytest
import yaml

from assignments.models import Assignment, ConfigVersion
from assignments.services import config_save
from gpus.models import Gpu, GpuSample
from tests.conftest import config_files, wait_for

pytestmark = [pytest.mark.integration]


def _device(settings, service):
    text = config_files(settings)["docker-compose.gpu-override.yml"] or ""
    svc = (yaml.safe_load(text) or {}).get("services", {}).get(service)
    return svc and svc["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"][0]


def test_beat_scans_follow_a_gpu_that_leaves_and_returns(
    celery_worker_factory, simulated_gpus, settings
):
    settings.GPUCONFIG_SCAN_INTERVAL = 1
    worker = celery_worker_factory(beat=True, env={"GPUCONFIG_SCAN_INTERVAL": "1"})

    wait_for(
        lambda: Gpu.objects.filter(available=True).count() == 2, what="the first periodic scan"
    )
    first_samples = GpuSample.objects.count()
    wait_for(lambda: GpuSample.objects.count() >= first_samples + 4, what="more periodic scans")

    config_save(strategy="isolation_first")  # committed: the file is written at once
    assert _device(settings, "ai-enrichment") == "1"

    entries = yaml.safe_load(simulated_gpus.read_text())
    simulated_gpus.write_text(yaml.safe_dump([entries[0]]))  # the 4 GB card is gone

    wait_for(
        lambda: not Gpu.objects.get(index=1).available, what="the GPU to be marked unavailable"
    )
    wait_for(
        lambda: Assignment.objects.get(service__name="ai-enrichment").is_falling_back,
        what="the fallback",
    )
    enrichment = Assignment.objects.get(service__name="ai-enrichment")
    assert enrichment.effective_gpu_index == 0
    wait_for(lambda: _device(settings, "ai-enrichment") == "0", what="the override file to follow")
    assert ConfigVersion.objects.filter(source="fallback").exists()
    log = worker.log()
    assert "WARNING" in log and "ai-enrichment" in log and "falling back to GPU 0" in log

    simulated_gpus.write_text(yaml.safe_dump(entries))  # the card is back
    wait_for(
        lambda: not Assignment.objects.get(service__name="ai-enrichment").is_falling_back,
        what="the saved assignment to be restored",
    )
    wait_for(
        lambda: _device(settings, "ai-enrichment") == "1", what="the override file to be restored"
    )
    assert Gpu.objects.get(index=1).available


def test_detect_endpoint_waits_for_the_worker_scan(
    celery_worker_factory, simulated_gpus, settings, staff_user
):
    from rest_framework.test import APIClient

    celery_worker_factory()
    client = APIClient()
    client.force_authenticate(staff_user)
    body = client.post("/api/system/gpu-config/detect").json()
    assert body["fresh"] is True
    assert [g["name"] for g in body["gpus"]] == ["NVIDIA RTX A5500", "NVIDIA RTX A400"]
