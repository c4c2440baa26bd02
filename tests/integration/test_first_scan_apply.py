"""The first scan on a running stack, then Apply: a real Docker engine running the five
services under compose, a real Celery worker on the real Redis, the API."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from applies.applying import diff
from applies.models import ApplyRun
from applies.runtime import get_runtime
from applies.selectors import apply_targets
from assignments.models import Assignment
from tests.conftest import wait_for
from tests.plugins.dockerd import SERVICES

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture
def first_scan_box(compose_stack, simulated_gpus, settings, staff_user, live_db):
    """Every service runs on GPU 0 (ai-enrichment with the base file's 6.8 GB budget); the
    reference hardware is then scanned for the first time, whose plan is saved as it comes."""
    from gpus.services import gpu_scan_run

    settings.GPUCONFIG_COMPOSE_PROJECT = compose_stack.project
    settings.GPUCONFIG_HEALTH_TIMEOUT = 30
    assert gpu_scan_run()["error"] is None
    client = APIClient()
    client.force_authenticate(staff_user)
    return compose_stack, client


def test_after_the_first_scan_a_save_of_the_running_placement_without_budgets_recreates_nothing(
    first_scan_box, celery_worker_factory
):
    stack, client = first_scan_box
    enrichment = Assignment.objects.get(service__name="ai-enrichment")
    assert (enrichment.gpu_index, enrichment.vram_budget_override) == (1, 2.3)
    # Right after the first scan, only the services whose GPU changed would restart.
    moved = {
        a.service.name for a in Assignment.objects.select_related("service") if a.gpu_index != 0
    }
    pending = {c.service for c in diff(get_runtime(), apply_targets()) if c.needs_recreate}
    assert pending == moved

    # The user saves where everything runs now, naming no budget.
    res = client.put(
        "/api/system/gpu-config",
        {"assignments": [{"service": s, "gpu_index": 0} for s in SERVICES]},
        format="json",
    )
    assert res.status_code == 200, res.json()
    celery_worker_factory()
    before = {s: stack.container(s)["Id"] for s in SERVICES}

    res = client.post("/api/system/gpu-config/apply")

    assert res.status_code == 202, res.json()
    assert res.json()["restarted_services"] == []

    def finished():
        body = client.get("/api/system/gpu-config/status").json()
        return body if not body["in_progress"] else None

    assert wait_for(finished, timeout=60, interval=0.3, what="the apply")["run_status"] == (
        "succeeded"
    )
    assert {s: stack.container(s)["Id"] for s in SERVICES} == before
    assert ApplyRun.objects.get().results == {}
