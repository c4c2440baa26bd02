"""Writes to the GPU inventory: syncing a scan into the database and running scans."""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.utils import timezone

from gpuconfig_site.errors import ApplicationError
from gpuconfig_site.hosts import host_is_local, host_key, host_name
from gpuconfig_site.redis_health import REDIS_DOWN
from gpus import attribution, backends
from gpus.attribution import ProcessUse
from gpus.backends.base import BackendError, BackendUnavailable, GpuReading
from gpus.models import Gpu, GpuProcess, GpuSample, ServiceVramSample
from gpus.selectors import (
    INVENTORY_VERSION_KEY,
    LAST_SCAN_KEY,
    gpu_index_holder,
    index_taken_detail,
    last_scan_stored,
)
from gpus.signals import inventory_changed

logger = logging.getLogger(__name__)

SCAN_LOCK_KEY = "gpus:scan-lock"
SCAN_SEQ_KEY = "gpus:scan-seq"


@dataclass
class SyncResult:
    """What changed in the inventory with one scan."""

    added: list[str] = field(default_factory=list)  # UUIDs
    lost: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    reindexed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.lost or self.returned or self.reindexed)


def _mark_missing_lost(existing: dict[str, Gpu], present_uuids: set[str], result: SyncResult):
    for gpu in existing.values():
        if gpu.available and gpu.uuid not in present_uuids:
            gpu.available = False
            gpu.utilization_percent = None
            gpu.save(update_fields=["available", "utilization_percent", "updated_at"])
            result.lost.append(gpu.uuid)
            logger.warning(
                "GPU %s (%s, index %s) is no longer available", gpu.uuid, gpu.name, gpu.index
            )


def _reading_apply(gpu: Gpu, reading: GpuReading, *, backend: str, now) -> None:
    """Set ``gpu``'s fields from ``reading`` (the caller saves it)."""
    cc = reading.compute_capability
    gpu.index = reading.index
    gpu.name = reading.name
    gpu.pci_bus_id = reading.pci_bus_id or ""
    gpu.vram_total_mb = reading.vram_total_mb
    gpu.vram_used_mb = reading.vram_used_mb
    gpu.processes_used_mb = reading.processes_used_mb
    gpu.compute_capability_major = cc[0] if cc else None
    gpu.compute_capability_minor = cc[1] if cc else None
    gpu.utilization_percent = reading.utilization_percent
    gpu.temperature_c = reading.temperature_c
    gpu.power_w = reading.power_w
    gpu.available = True
    gpu.last_seen = now
    gpu.backend = backend
    gpu.updated_at = now


# What a scan rewrites of a GPU that stays where it was.
_READING_FIELDS = [
    "index",
    "name",
    "pci_bus_id",
    "vram_total_mb",
    "vram_used_mb",
    "processes_used_mb",
    "compute_capability_major",
    "compute_capability_minor",
    "utilization_percent",
    "temperature_c",
    "power_w",
    "available",
    "last_seen",
    "backend",
    "updated_at",
]


def _mark_reported_lost(
    existing: dict[str, Gpu], readings: list[GpuReading], result: SyncResult
) -> None:
    for reading in readings:
        if reading.lost and reading.uuid in existing and reading.uuid not in result.lost:
            gpu = existing[reading.uuid]
            if gpu.available:
                gpu.available = False
                gpu.save(update_fields=["available", "updated_at"])
                result.lost.append(gpu.uuid)
                logger.warning("GPU %s (%s) reported lost by the driver", gpu.uuid, gpu.name)


def _unattributed(readings: Sequence[GpuReading]) -> dict[str, list[ProcessUse]]:
    """The readings' processes with nothing known of them but PID and memory."""
    return {
        r.uuid: [
            ProcessUse(gpu_uuid=r.uuid, pid=pid, used_mb=used, resolved=False)
            for pid, used in r.processes
        ]
        for r in readings
        if not r.lost
    }


def _processes_record(gpus: Sequence[Gpu], processes: Mapping[str, Sequence[ProcessUse]], *, now):
    """Replace the host at hand's GPU processes with those of ``gpus`` (the present ones): a GPU
    gone from the scan holds no process gpuconfig can vouch for. One delete, one insert."""
    GpuProcess.objects.all().delete()
    GpuProcess.objects.bulk_create(
        GpuProcess(
            gpu=gpu,
            pid=use.pid,
            name=use.name[:64],
            kind=use.kind,
            used_mb=use.used_mb,
            container_id=use.container_id,
            container_name=use.container_name[:255],
            service=use.service or "",
            resolved=use.resolved,
            seen_at=now,
        )
        for gpu in gpus
        for use in {use.pid: use for use in processes.get(gpu.uuid, ())}.values()
    )


def _service_samples_record(processes: Mapping[str, Sequence[ProcessUse]], *, now) -> None:
    ServiceVramSample.objects.bulk_create(
        ServiceVramSample(service=service, gpu_uuid=uuid, used_mb=used, taken_at=now)
        for (service, uuid), used in sorted(attribution.service_totals(processes).items())
    )
    keep = max(settings.GPUCONFIG_VRAM_WINDOW, settings.GPUCONFIG_SAMPLE_RETENTION)
    ServiceVramSample.objects.filter(taken_at__lt=now - timedelta(seconds=keep)).delete()


@transaction.atomic
def gpu_inventory_sync(
    *,
    readings: list[GpuReading],
    backend: str = "",
    processes: Mapping[str, Sequence[ProcessUse]] | None = None,
) -> SyncResult:
    """Upsert GPUs by UUID from one scan; GPUs missing from it (or lost) become unavailable.

    Indices follow the scan: a card that moved keeps its row (and so its assignments, which are
    remembered by UUID). One utilisation/VRAM sample per present GPU is recorded and samples
    older than the retention window are pruned. ``processes`` (by GPU UUID, attributed by
    ``gpus.attribution``) replace each present GPU's process list, and each managed service's
    use per GPU is recorded as a sample; without it the readings' PIDs are kept unattributed.
    """
    if processes is None:
        processes = _unattributed(readings)
    now = timezone.now()
    result = SyncResult()
    existing = {gpu.uuid: gpu for gpu in Gpu.objects.select_for_update()}
    present = [r for r in readings if not r.lost]

    # Free the indices first so the "one present GPU per index" constraint holds mid-update.
    _mark_missing_lost(existing, {r.uuid for r in present}, result)
    moving = [
        existing[r.uuid]
        for r in present
        if r.uuid in existing and existing[r.uuid].available and existing[r.uuid].index != r.index
    ]
    if moving:
        Gpu.objects.filter(pk__in=[g.pk for g in moving]).update(available=False)

    # A GPU that stays at its index is rewritten by a plain UPDATE (the cached reads made stale
    # once for all of them); one that is new, returns or moves is saved, in scan order, as the
    # index constraint needs.
    stayed: list[Gpu] = []
    synced: list[Gpu] = []
    for reading in present:
        gpu = existing.get(reading.uuid)
        alone = True
        if gpu is None:
            gpu = Gpu(uuid=reading.uuid)
            result.added.append(reading.uuid)
        elif not gpu.available and gpu not in moving:
            result.returned.append(reading.uuid)
        elif gpu.index != reading.index:
            result.reindexed.append(reading.uuid)
        else:
            alone = False
        _reading_apply(gpu, reading, backend=backend, now=now)
        if alone:
            gpu.save()
        else:
            stayed.append(gpu)
        synced.append(gpu)
    for gpu in stayed:
        fields = {name: getattr(gpu, name) for name in _READING_FIELDS}
        Gpu.objects.filter(pk=gpu.pk).update(**fields)
    if stayed:
        # What a save of each would have done (an update sends no post_save), once.
        inventory_version_bump()
    GpuSample.objects.bulk_create(
        GpuSample(
            gpu=gpu,
            taken_at=now,
            utilization_percent=gpu.utilization_percent,
            vram_used_mb=gpu.vram_used_mb,
        )
        for gpu in synced
    )
    _processes_record(synced, processes, now=now)

    _mark_reported_lost(existing, readings, result)
    _service_samples_record(processes, now=now)
    GpuSample.objects.filter(
        taken_at__lt=now - timedelta(seconds=settings.GPUCONFIG_SAMPLE_RETENTION)
    ).delete()
    return result


class GpuIndexTaken(ApplicationError):
    """Another present GPU has this index: marking this one available again would clash."""

    code = "gpu_index_taken"


def gpu_availability_set(*, gpu: Gpu, available: bool) -> SyncResult:
    """Mark a GPU present or lost by hand (the admin) and announce it as a scan would
    (``inventory_changed``): services fall back from a lost card or return to one, with a
    ConfigVersion and the files rewritten. Raises GpuIndexTaken when another present GPU holds
    its index, and whatever a receiver of the signal raises (nothing is changed then)."""
    result = SyncResult()
    with transaction.atomic():
        gpu = Gpu.objects.select_for_update().get(pk=gpu.pk)
        if gpu.available == available:
            return result
        holder = gpu_index_holder(gpu=gpu) if available else None
        if holder is not None:
            raise GpuIndexTaken(index_taken_detail(gpu=gpu, holder=holder), field="available")
        gpu.available = available
        gpu.save(update_fields=["available", "updated_at"])
        (result.returned if available else result.lost).append(gpu.uuid)
        # The change and what follows from it are saved together or not at all: a receiver
        # that cannot finish (the generated files cannot be written) refuses both.
        inventory_changed.send(sender=gpu_availability_set, result=result, by_hand=True)
    logger.warning(
        "GPU %s (%s) marked %s by hand", gpu.uuid, gpu.name, "available" if available else "lost"
    )
    return result


def _backend_mismatch(found: str | None) -> str | None:
    """Why a manual scan by ``found`` must not sync, or None when it may.

    A shell whose configuration differs from the site's (another backend, no simulated file)
    would otherwise mark every GPU of the site's inventory lost.
    """
    configured = str(settings.GPUCONFIG_GPU_BACKEND or "auto").strip().lower()
    if configured == "auto":
        configured = "simulated" if settings.GPUCONFIG_SIMULATED_GPUS else None
    recorded = set(
        Gpu.objects.filter(available=True).exclude(backend="").values_list("backend", flat=True)
    )
    inventory = next(iter(sorted(recorded)), None)
    for expected, whose in ((configured, "the configured one"), (inventory, "the inventory's")):
        if expected and found != expected:
            return (
                f"This scan used the {found or 'no'} backend but {whose} is {expected}: "
                "no GPU was marked lost. Run it with the site's configuration "
                f"({settings.GPUCONFIG_ENV_FILE})."
            )
    return None


def gpu_scan_run(*, backend: str | None = None, wait: float = 30.0, manual: bool = False) -> dict:
    """Run one scan now, sync it, and announce a changed inventory (``inventory_changed``).

    Concurrent calls do not race: one scans, the others wait for it and reuse its result.
    A ``manual`` scan (from the shell) that finds another backend than the configured one, or
    than the inventory's, changes nothing and reports why in ``error``.
    Returns the scan summary (sequence number, backend, notes, error, what changed, duration).
    """
    if not host_is_local():
        # Another host's GPUs are scanned by its own agent; this machine's NVML is not theirs.
        return {
            "backend": None,
            "notes": [],
            "changes": {},
            "error": f"Host {host_name()!r} is scanned by its own agent, not from this machine.",
        }
    token = uuidlib.uuid4().hex
    lock = host_key(SCAN_LOCK_KEY)
    if not cache.add(lock, token, timeout=max(int(wait), 60)):
        before = (last_scan_stored() or {}).get("seq", 0)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            summary = last_scan_stored()
            if cache.get(lock) is None or (summary and summary.get("seq", 0) > before):
                return summary or {}
            time.sleep(0.05)
        return last_scan_stored() or {}

    try:
        started = time.monotonic()
        summary = _scan_and_sync(backend, manual=manual)
        if summary.pop("refused", False):
            # The site's inventory and last scan stay as the site's own scans left them.
            return summary
        summary["seq"] = _scan_seq_next()
        summary["duration_s"] = round(time.monotonic() - started, 4)
        summary["finished_at"] = timezone.now().isoformat()
        cache.set(host_key(LAST_SCAN_KEY), summary, timeout=None)
        return summary
    finally:
        if cache.get(lock) == token:
            cache.delete(lock)


def _scan_and_sync(backend: str | None, *, manual: bool = False) -> dict:
    summary: dict = {"backend": None, "notes": [], "error": None, "changes": {}}
    try:
        result = backends.scan(backend)
    except (BackendUnavailable, BackendError) as exc:
        # An explicit backend that cannot run: keep the inventory as it is, report why.
        summary["error"] = str(exc)
        logger.error("GPU scan failed: %s", exc)
        return summary
    summary["backend"] = result.backend
    summary["notes"] = list(result.notes)
    refused = _backend_mismatch(result.backend) if manual else None
    if refused:
        summary.update(error=refused, refused=True)
        logger.warning("Manual GPU scan not synced: %s", refused)
        return summary
    processes = processes_attribute(result.readings)
    uses = [use for found in processes.values() for use in found]
    summary["processes"] = {
        "seen": len(uses),
        "unresolved": sum(1 for use in uses if not use.resolved),
        "proc_root": settings.GPUCONFIG_PROC_ROOT,
    }
    return _sync_announced(summary, result.readings, result.backend or "", processes)


def _sync_announced(
    summary: dict,
    readings: list[GpuReading],
    backend: str,
    processes: Mapping[str, Sequence[ProcessUse]] | None,
) -> dict:
    """Sync one scan's readings into the host at hand's inventory and announce the change."""
    try:
        sync = gpu_inventory_sync(readings=readings, backend=backend, processes=processes)
        summary["changes"] = {
            "added": sync.added,
            "lost": sync.lost,
            "returned": sync.returned,
            "reindexed": sync.reindexed,
        }
        if sync.changed:
            # The sync's transaction has ended: listeners see the new inventory.
            inventory_changed.send(sender=gpu_inventory_sync, result=sync)
    except DatabaseError as exc:
        # Reported like a backend failure (detect and the page show it), not lost in a log.
        summary["error"] = f"The scan could not be saved to the database: {exc}"
        logger.exception("GPU scan could not be saved")
    return summary


def scan_report_ingest(
    *,
    readings: list[GpuReading],
    backend: str,
    notes: Sequence[str] = (),
    error: str | None = None,
    processes: Mapping[str, Sequence[ProcessUse]] | None = None,
) -> dict:
    """Take in a scan another machine made (a host's agent) for the host at hand, as this
    machine's own scans are taken in: the inventory synced, the change announced (fallbacks
    follow), the summary kept as the host's last scan. A scan that failed there (``error``)
    changes no GPU row: a host whose NVML broke keeps its inventory, reported."""
    started = time.monotonic()
    summary: dict = {"backend": backend or None, "notes": list(notes), "error": error}
    summary["changes"] = {}
    if error is None:
        _sync_announced(summary, readings, backend, processes)
    summary["seq"] = _scan_seq_next()
    summary["duration_s"] = round(time.monotonic() - started, 4)
    summary["finished_at"] = timezone.now().isoformat()
    cache.set(host_key(LAST_SCAN_KEY), summary, timeout=None)
    return summary


def processes_attribute(readings: Sequence[GpuReading]) -> dict[str, list[ProcessUse]]:
    """The readings' GPU processes attributed through ``GPUCONFIG_PROC_ROOT`` and the
    registered container resolver (``gpus.attribution``)."""
    return attribution.processes_attribute(
        readings=readings,
        reader=attribution.proc_reader(settings.GPUCONFIG_PROC_ROOT),
        resolve=attribution.container_resolver(),
    )


def _counter_next(key: str) -> int:
    try:
        return cache.incr(key)
    except ValueError:
        cache.set(key, 1, timeout=None)
        return 1


def _scan_seq_next() -> int:
    return _counter_next(host_key(SCAN_SEQ_KEY))


def inventory_version_bump(**_) -> None:
    """Make the cached inventory read models stale (``gpus.selectors.inventory_read_cached``),
    now and again once the current transaction commits: a read between the two may have
    cached what was there before. Connected to every save and delete of a GPU."""

    def bump() -> None:
        try:
            _counter_next(host_key(INVENTORY_VERSION_KEY))
        except REDIS_DOWN as exc:
            logger.warning("Redis is not reachable (%s); cached GPU reads expire on their own", exc)

    bump()
    transaction.on_commit(bump)
