"""``/gpu-config/status`` and ``/gpu-config/services`` answer from the container state the
worker keeps (no engine call in a request), and tell where a service runs now (``gpu_index``)
apart from where it is saved (``assigned_gpu_index``)."""

from __future__ import annotations

import json
import re
import time

import pytest
from django.core.cache import cache

from applies.live import LIVE_KEY, live_refresh
from applies.runtime.base import ContainerRuntime, ContainerState
from assignments.models import Assignment
from gpuconfig_site.celery import app as celery_app

pytestmark = pytest.mark.django_db

READS = ("/api/system/gpu-config/status", "/api/system/gpu-config/services")


class OnGpuZeroRuntime(ContainerRuntime):
    """Every service's container runs healthy on GPU 0 (written to the runtime contract)."""

    name = "stub"

    def inspect(self, service: str) -> ContainerState | None:
        return ContainerState(
            id=f"id-{service}-0123456789",
            name=service,
            status="running",
            health="healthy",
            device_ids=("0",),
            budget_gb=None,
        )

    def recover(self, journal=None) -> list[str]:
        return []


class NoContainersRuntime(OnGpuZeroRuntime):
    """An engine that answers, with no container for any service."""

    def inspect(self, service: str) -> ContainerState | None:
        return None


class UntouchableRuntime(ContainerRuntime):
    """An engine a request must not call: building it, or any call on it, fails the test."""

    name = "untouchable"

    def __init__(self, *args, **kwargs):
        raise AssertionError("a request path called the container engine")

    def inspect(self, service):  # pragma: no cover - never reached
        raise AssertionError("a request path called the container engine")

    def recover(self, journal=None):  # pragma: no cover - never reached
        raise AssertionError("a request path called the container engine")


@pytest.fixture
def engine_state_stored(settings, reference_inventory):
    """The worker's stored copy of the engine's answer: every container on GPU 0."""
    settings.GPUCONFIG_CONTAINER_RUNTIME = f"{__name__}.OnGpuZeroRuntime"
    live_refresh()
    settings.GPUCONFIG_CONTAINER_RUNTIME = f"{__name__}.UntouchableRuntime"


@pytest.mark.parametrize("path", READS)
def test_status_and_services_are_served_from_the_stored_state_without_an_engine_call(
    engine_state_stored, key_client, path
):
    for _ in range(3):
        res = key_client.get(path)
        assert res.status_code == 200, res.content[:500]
    services = {s["name"]: s for s in res.json()["services"]}
    assert services["ai-llm"]["status"] == "running"
    assert services["ai-llm"]["container"] == "id-ai-llm-01"


@pytest.mark.parametrize("path", READS)
def test_a_stale_stored_state_is_left_to_the_worker_to_refresh(
    engine_state_stored, key_client, path
):
    """Older than the refresh interval: the request asks a worker (queued, not run inline) and
    answers with what is stored."""
    snapshot = cache.get(LIVE_KEY)
    cache.set(LIVE_KEY, {**snapshot, "checked_at": time.time() - 3600})
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    try:
        res = key_client.get(path)
    finally:
        celery_app.conf.task_always_eager = previous
    assert res.status_code == 200, res.content[:500]
    assert {s["status"] for s in res.json()["services"]} == {"running"}


@pytest.mark.parametrize("path", READS)
def test_gpu_index_is_where_a_service_runs_and_assigned_gpu_index_where_it_is_saved(
    engine_state_stored, key_client, path
):
    """The reference layout saves ai-enrichment on GPU 1 while its container runs on GPU 0:
    it waits for Apply, and says so; the others run where they are saved."""
    assert Assignment.objects.get(service__name="ai-enrichment").gpu_index == 1
    services = {s["name"]: s for s in key_client.get(path).json()["services"]}
    enrichment = services["ai-enrichment"]
    assert (enrichment["gpu_index"], enrichment["assigned_gpu_index"]) == (0, 1)
    assert enrichment["pending_apply"] is True
    llm = services["ai-llm"]
    assert (llm["gpu_index"], llm["assigned_gpu_index"], llm["pending_apply"]) == (0, 0, False)


def test_a_service_without_a_container_runs_nowhere_and_waits_for_nothing(
    settings, reference_inventory, key_client
):
    """The engine has no container for any service: none runs on a GPU, and none is claimed
    to wait for Apply (there is nothing to restart)."""
    settings.GPUCONFIG_CONTAINER_RUNTIME = f"{__name__}.NoContainersRuntime"
    live_refresh()
    settings.GPUCONFIG_CONTAINER_RUNTIME = f"{__name__}.UntouchableRuntime"
    services = key_client.get("/api/system/gpu-config/services").json()["services"]
    for service in services:
        assert service["status"] == "missing"
        assert service["gpu_index"] is None
        # The guide's layout: every service on GPU 0 but ai-enrichment, on GPU 1.
        assert service["assigned_gpu_index"] == (1 if service["name"] == "ai-enrichment" else 0)
        assert service["pending_apply"] is False


def test_gpuconfig_status_prints_the_running_gpu_and_the_saved_one_apart(
    settings, reference_inventory, capsys
):
    from gpuconfig_site import cli

    settings.GPUCONFIG_CONTAINER_RUNTIME = f"{__name__}.OnGpuZeroRuntime"
    assert cli.main(["status"]) == 0
    lines = {line.split(":")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["ai-enrichment"].endswith("GPU 0 (saved: GPU 1, waiting for Apply)")
    assert lines["ai-llm"].endswith("GPU 0")
    assert cli.main(["status", "--json"]) == 0
    printed = {s["name"]: s for s in json.loads(capsys.readouterr().out)["services"]}
    assert (
        printed["ai-enrichment"]["gpu_index"],
        printed["ai-enrichment"]["assigned_gpu_index"],
    ) == (0, 1)


def test_the_pages_services_panel_shows_the_running_gpu_and_a_service_waiting_for_apply(
    engine_state_stored, client, staff_user
):
    client.force_login(staff_user)
    page = re.sub(
        r"\s+", " ", client.get("/settings/gpu/services/", HTTP_HX_REQUEST="true").content.decode()
    )
    enrichment = re.search(r'<tr id="svc-ai-enrichment">.*?</tr>', page).group(0)
    assert "Waiting for Apply · saved: GPU 1 (RTX A400)" in enrichment
    assert '<td data-label="GPU">GPU 0 (RTX A5500)' in enrichment
    llm = re.search(r'<tr id="svc-ai-llm">.*?</tr>', page).group(0)
    assert "Waiting for Apply" not in llm
