"""Reads of the GPU inventory. Request handlers use these; none of them touches NVML."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db.models import QuerySet
from django.utils import timezone

from gpuconfig_site.hosts import host_is_local, host_key
from gpuconfig_site.read_memo import cache_read, cache_read_many, share
from gpuconfig_site.redis_health import REDIS_DOWN, unknown_while_redis_is_down
from gpus.models import Gpu, GpuProcess, GpuSample, ServiceVramSample

NO_GPUS_DETAIL = "No GPUs detected"
TROUBLESHOOTING = (
    "Verify NVIDIA drivers are installed: run `nvidia-smi` on the host.",
    "Check the NVIDIA Container Toolkit: "
    "`docker run --rm --gpus all nvidia/cuda:12.0-base nvidia-smi`.",
    "Ensure the containers have GPU access in your compose file "
    "(deploy.resources.reservations.devices with driver: nvidia).",
    'Click "Re-scan GPUs" to run detection again.',
)
LAST_SCAN_KEY = share("gpus:last-scan", per_host=True)  # read once per page render
# Bumped once a change to a GPU row has committed (``gpus.services.inventory_version_bump``).
INVENTORY_VERSION_KEY = "gpus:inventory-version"
# A read model stays at most this long, in case a bump was lost while Redis was away.
INVENTORY_READ_TTL = 60

T = TypeVar("T")


def gpu_index_holder(*, gpu: Gpu) -> Gpu | None:
    """Another present GPU at ``gpu``'s index (so ``gpu`` cannot be present under it), if any."""
    return Gpu.objects.filter(index=gpu.index, available=True).exclude(pk=gpu.pk).first()


def index_taken_detail(*, gpu: Gpu, holder: Gpu) -> str:
    return (
        f"GPU {holder.index} is another card now ({holder.name}, {holder.uuid}); this one cannot "
        "be present under the same index. Re-scan: a scan gives it its current index."
    )


def gpu_list(*, include_unavailable: bool = True) -> QuerySet[Gpu]:
    """GPUs, present ones first by index, then lost ones, with their processes."""
    qs = Gpu.objects.prefetch_related("processes")
    if not include_unavailable:
        qs = qs.filter(available=True)
    return qs.order_by("-available", "index", "uuid")


def gpu_samples(
    *, gpu_ids: list[int] | None = None, seconds: int | None = None
) -> dict[int, list[GpuSample]]:
    """Recorded samples per GPU id, oldest first, within the retention window."""
    window = seconds or settings.GPUCONFIG_SAMPLE_RETENTION
    since = timezone.now() - timedelta(seconds=window)
    qs = GpuSample.objects.filter(taken_at__gte=since).order_by("gpu_id", "taken_at")
    if gpu_ids is not None:
        qs = qs.filter(gpu_id__in=gpu_ids)
    out: dict[int, list[GpuSample]] = {}
    for sample in qs:
        out.setdefault(sample.gpu_id, []).append(sample)
    return out


def last_scan_stored() -> dict | None:
    """What the last scan reported (backend, notes, error, sequence number), if any ran.
    Raises when Redis is down: scans and those waiting for one must know."""
    return cache_read(LAST_SCAN_KEY)


def inventory_state_keys() -> tuple[str, str]:
    """The host at hand's inventory version and last scan keys (what its cached reads are
    kept under)."""
    return host_key(INVENTORY_VERSION_KEY), host_key(LAST_SCAN_KEY)


@unknown_while_redis_is_down()
def last_scan() -> dict | None:
    """``last_scan_stored()`` for display: unknown (None) while Redis is down."""
    return last_scan_stored()


def inventory_read_cached(
    name: str, build: Callable[[], T], *, ttl: Callable[[T], float] | None = None
) -> T:
    """``build()``, a pure function of the GPU rows, their samples and the last scan, kept in
    the cache with the inventory's state it was built under: the version bumped by every
    committed GPU change and the last scan's sequence number (samples come and go with scans
    only). One cache round trip reads the state and the kept value together; the value is used
    when its state is the current one. ``ttl(value)``: seconds it stays right without a change,
    when less than ``INVENTORY_READ_TTL``. Without Redis it is built on every call."""
    key, version, last = host_key(f"gpus:read:{name}"), *inventory_state_keys()
    try:
        found = cache_read_many([version, last, key])
    except REDIS_DOWN:
        return build()
    state = (found.get(version, 0), (found.get(last) or {}).get("seq", 0))
    kept = found.get(key)
    if kept is not None and kept[0] == state:
        return kept[1]
    value = build()
    timeout = min(INVENTORY_READ_TTL, ttl(value)) if ttl else INVENTORY_READ_TTL
    try:
        if timeout >= 1:
            cache.set(key, (state, value), int(timeout))
    except REDIS_DOWN:
        pass
    return value


def detection_mode() -> dict:
    """Which backend the inventory comes from and whether it is simulated (not this machine's
    drivers). The configured backend until a scan has reported the one it used."""
    if not host_is_local():
        # Another host's GPUs are what its agent's last scan said, whatever this machine is set to.
        backend = (last_scan() or {}).get("backend")
        return {"backend": backend, "simulated": backend == "simulated"}
    backend = (last_scan() or {}).get("backend") or settings.GPUCONFIG_GPU_BACKEND
    simulated = (
        bool(settings.GPUCONFIG_SIMULATED_GPUS)
        or settings.GPUCONFIG_GPU_BACKEND == "simulated"
        or backend == "simulated"
    )
    return {"backend": backend, "simulated": simulated}


def gpu_sample_page(*, limit: int, offset: int = 0) -> tuple[list[GpuSample], int]:
    """Recorded samples, newest first, one page of them, and how many there are in all."""
    qs = GpuSample.objects.select_related("gpu").order_by("-taken_at", "-pk")
    return list(qs[offset : offset + limit]), qs.count()


def gpu_processes(*, gpu_ids: list[int] | None = None) -> dict[int, list[GpuProcess]]:
    """The processes of the last scan per GPU id, largest first."""
    qs = GpuProcess.objects.order_by("gpu_id", "-used_mb", "pid")
    if gpu_ids is not None:
        qs = qs.filter(gpu_id__in=gpu_ids)
    out: dict[int, list[GpuProcess]] = {}
    for process in qs:
        out.setdefault(process.gpu_id, []).append(process)
    return out


@dataclass(frozen=True, slots=True)
class VramSummary:
    """What one service held over a window, each figure the sum over its GPUs at one scan.

    ``now_mb`` is its use at the last scan (0 when that scan saw none of its processes);
    ``peak_mb`` the largest and ``p95_mb`` the 95th percentile (nearest rank) of its per-scan
    totals; ``samples`` the number of scans that saw it; ``gpu_uuids`` where.
    """

    service: str
    now_mb: int
    peak_mb: int
    p95_mb: int
    samples: int
    window_s: int
    gpu_uuids: tuple[str, ...]


def percentile(values: list[int], fraction: float) -> int:
    """Nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


def service_vram_summaries(*, window_s: int | None = None) -> dict[str, VramSummary]:
    """Now / peak / p95 per service over the last ``window_s`` seconds (default
    ``GPUCONFIG_VRAM_WINDOW``), for the services any scan in it attributed memory to. Samples
    come only with scans, so the figures are kept in the cache until the next one (a day of
    samples is read once per scan, not once per request)."""
    window = int(window_s or settings.GPUCONFIG_VRAM_WINDOW)
    return inventory_read_cached(
        f"vram-summaries:{window}", lambda: _service_vram_summaries(window)
    )


def _service_vram_summaries(window: int) -> dict[str, VramSummary]:
    since = timezone.now() - timedelta(seconds=window)
    rows = ServiceVramSample.objects.filter(taken_at__gte=since).values_list(
        "service", "gpu_uuid", "used_mb", "taken_at"
    )
    per_scan: dict[str, dict] = {}
    gpus: dict[str, set[str]] = {}
    newest = None
    for service, uuid, used, taken in rows:
        scans = per_scan.setdefault(service, {})
        scans[taken] = scans.get(taken, 0) + used
        gpus.setdefault(service, set()).add(uuid)
        newest = taken if newest is None or taken > newest else newest
    last_scan_at = (
        Gpu.objects.filter(available=True)
        .order_by("-last_seen")
        .values_list("last_seen", flat=True)
        .first()
    )
    # A scan stamps its samples with the time it stamps the GPUs: the last scan is "now".
    latest = last_scan_at or newest
    out = {}
    for service, scans in per_scan.items():
        totals = list(scans.values())
        out[service] = VramSummary(
            service=service,
            now_mb=scans.get(latest, 0),
            peak_mb=max(totals),
            p95_mb=percentile(totals, 0.95),
            samples=len(totals),
            window_s=window,
            gpu_uuids=tuple(sorted(gpus[service])),
        )
    return out
