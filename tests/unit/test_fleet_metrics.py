"""``/metrics`` speaks for the whole fleet: every per-GPU, per-service, per-apply and per-scan
sample carries the ``host`` it belongs to, under the metric names a single box always had."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from applies.models import ApplyRun
from fleet.models import Host
from fleet.services import host_register
from gpuconfig_site.hosts import host_scope
from gpus.backends.base import GpuReading
from gpus.models import Gpu
from gpus.services import scan_report_ingest

pytestmark = pytest.mark.django_db

B_GPUS = [
    GpuReading(
        index=0,
        uuid="GPU-b0",
        name="NVIDIA L4",
        vram_total_mb=23034,
        vram_used_mb=500,
        utilization_percent=10,
    ),
    GpuReading(
        index=1,
        uuid="GPU-b1",
        name="NVIDIA T4",
        vram_total_mb=15360,
        vram_used_mb=300,
        utilization_percent=20,
    ),
]

MB = 1024 * 1024
PER_HOST = {
    "gpuconfig_gpu_memory_used_bytes",
    "gpuconfig_gpu_memory_total_bytes",
    "gpuconfig_gpu_utilization_percent",
    "gpuconfig_gpu_available",
    "gpuconfig_gpus_lost",
    "gpuconfig_service_assigned_gpu",
    "gpuconfig_service_planned_memory_bytes",
    "gpuconfig_plan_warnings",
    "gpuconfig_apply_runs_total",
    "gpuconfig_apply_rollbacks_total",
    "gpuconfig_apply_duration_seconds_count",
    "gpuconfig_last_apply_duration_seconds",
    "gpuconfig_last_scan_success",
}


@pytest.fixture
def two_hosts(reference_inventory):
    """This machine's reference inventory and host B (offline, one L4 lost, one apply run)."""
    host = host_register(name="gpu-b")
    Host.objects.filter(pk=host.pk).update(last_heartbeat=timezone.now() - timedelta(hours=1))
    with host_scope("gpu-b"):
        scan_report_ingest(readings=B_GPUS, backend="nvml")
        scan_report_ingest(readings=B_GPUS[1:], backend="nvml")
        now = timezone.now()
        ApplyRun.objects.create(
            status=ApplyRun.Status.SUCCEEDED,
            started_at=now - timedelta(seconds=7),
            finished_at=now,
            results={"ai-llm": {"outcome": "rolled_back", "message": "unhealthy"}},
        )
    return host


def scrape(key_client) -> list:
    text = key_client.get("/metrics").content.decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_every_per_host_sample_names_its_host(two_hosts, key_client, settings):
    got = scrape(key_client)
    names = {s.name for s in got}
    assert names >= PER_HOST, PER_HOST - names
    unlabelled = [s for s in got if s.name in PER_HOST and "host" not in s.labels]
    assert unlabelled == []
    for name in PER_HOST:
        hosts = {s.labels["host"] for s in got if s.name == name}
        expected = {"gpu-b"} if "last_apply" in name else {"gpu-b", settings.GPUCONFIG_HOST_NAME}
        assert hosts == expected, name


def test_each_hosts_gpus_and_runs_are_its_own(two_hosts, key_client, settings):
    got = scrape(key_client)

    def value(name, **labels):
        (match,) = [s.value for s in got if s.name == name and labels.items() <= s.labels.items()]
        return match

    local = settings.GPUCONFIG_HOST_NAME
    t4 = Gpu.all_hosts.get(uuid="GPU-b1")
    assert value("gpuconfig_gpu_memory_total_bytes", host="gpu-b", uuid="GPU-b1") == (
        t4.vram_total_mb * MB
    )
    assert value("gpuconfig_gpu_available", host="gpu-b", uuid="GPU-b0") == 0
    assert value("gpuconfig_gpus_lost", host="gpu-b") == 1
    assert value("gpuconfig_gpus_lost", host=local) == 0
    for gpu in Gpu.all_hosts.filter(host=local):
        assert value("gpuconfig_gpu_memory_total_bytes", host=local, uuid=gpu.uuid) == (
            gpu.vram_total_mb * MB
        )
    # B's fallback moved ai-llm onto its T4; this machine's plan is its own.
    assert value("gpuconfig_service_assigned_gpu", host="gpu-b", service="ai-llm") == 1
    assert value("gpuconfig_plan_warnings", host="gpu-b", code="fallback") == 1
    assert not [
        s
        for s in got
        if s.name == "gpuconfig_plan_warnings" and s.labels == {"host": local, "code": "fallback"}
    ]
    assert value("gpuconfig_apply_runs_total", host="gpu-b", outcome="succeeded") == 1
    assert value("gpuconfig_apply_runs_total", host=local, outcome="succeeded") == 0
    assert value("gpuconfig_apply_rollbacks_total", host="gpu-b") == 1
    assert value("gpuconfig_apply_rollbacks_total", host=local) == 0
    assert value("gpuconfig_apply_duration_seconds_sum", host="gpu-b") == pytest.approx(7)
    assert value("gpuconfig_last_apply_duration_seconds", host="gpu-b") == pytest.approx(7)
    assert value("gpuconfig_last_scan_success", host="gpu-b") == 1
