"""A scan's sync writes in bulk: what it costs per GPU is one UPDATE, and what it writes is
what it always wrote (readings, one sample per GPU, the processes replaced, reads made stale)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gpus.backends.base import GpuReading
from gpus.models import Gpu, GpuProcess, GpuSample
from gpus.selectors import inventory_state_keys
from gpus.services import gpu_inventory_sync

pytestmark = pytest.mark.django_db


def scan(count: int, *, used: int = 100, first_uuid: int = 0) -> list[GpuReading]:
    return [
        GpuReading(
            index=i,
            uuid=f"GPU-{first_uuid + i:03d}",
            name="NVIDIA L4",
            vram_total_mb=23034,
            vram_used_mb=used + i,
            utilization_percent=i,
            processes=((1000 + i, 50), (2000 + i, 60)),
        )
        for i in range(count)
    ]


def steady_queries(count: int, first_uuid: int) -> int:
    gpu_inventory_sync(readings=scan(count, first_uuid=first_uuid), backend="nvml")
    with CaptureQueriesContext(connection) as queries:
        gpu_inventory_sync(readings=scan(count, used=500, first_uuid=first_uuid), backend="nvml")
    return len(queries)


def test_a_steady_scan_costs_one_update_per_gpu_and_a_fixed_number_of_other_queries():
    few = steady_queries(2, 0)
    Gpu.all_hosts.all().delete()
    many = steady_queries(12, 100)
    assert many - few == 10  # one UPDATE per GPU; samples and processes in one write each


def test_a_steady_scan_writes_the_readings_samples_and_processes_and_stales_the_reads():
    from django.core.cache import cache

    gpu_inventory_sync(readings=scan(3), backend="nvml")
    version_key, _ = inventory_state_keys()
    before = cache.get(version_key)
    gpu_inventory_sync(readings=scan(3, used=900)[:2], backend="nvml")
    assert cache.get(version_key) != before
    rows = {g.uuid: (g.index, g.vram_used_mb, g.available) for g in Gpu.objects.all()}
    assert rows == {
        "GPU-000": (0, 900, True),
        "GPU-001": (1, 901, True),
        "GPU-002": (2, 102, False),
    }
    assert GpuSample.objects.filter(gpu__uuid="GPU-000").count() == 2
    assert GpuSample.objects.filter(gpu__uuid="GPU-002").count() == 1
    assert sorted(GpuProcess.objects.values_list("gpu__uuid", "pid")) == [
        ("GPU-000", 1000),
        ("GPU-000", 2000),
        ("GPU-001", 1001),
        ("GPU-001", 2001),
    ]
    gpu = Gpu.objects.get(uuid="GPU-001")
    assert gpu.updated_at == gpu.last_seen  # written with the scan, as a save would
