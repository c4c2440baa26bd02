"""Applies room, reads: the apply runs, what each service should run with (the targets of an
apply), the latest apply's progress and each service's container state. Nothing here writes.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from applies import progress
from applies.applying import Target
from applies.models import ApplyRun
from applies.run_reads import runs_read_cached
from assignments.files.entries import device_id
from assignments.files.project import config_labels
from assignments.selectors import (
    PlanningInput,
    config_entries,
    planning_input,
    planning_input_cached,
)
from gpuconfig_site.heartbeat import worker_alive


def apply_run_list(*, limit: int = 10) -> QuerySet[ApplyRun]:
    return ApplyRun.objects.select_related("requested_by")[:limit]


def apply_run_latest() -> ApplyRun | None:
    """The latest apply run (its log and journal loaded only when read), kept in the cache
    while no run changed (``applies.run_reads``)."""
    return runs_read_cached(
        "latest",
        lambda: ApplyRun.objects.defer("log", "journal").order_by("-created_at", "-pk").first(),
    )


def apply_targets(data: PlanningInput | None = None) -> list[Target]:
    """What each enabled service should run with: device ids (in the configured format), its
    VRAM budget when one is saved, and the compose labels of the written files."""

    data = data or planning_input()
    id_format = settings.GPUCONFIG_DEVICE_ID_FORMAT
    entries = config_entries(data)
    labels = config_labels(entries)
    targets = []
    for entry, demand in zip(entries, data.services, strict=True):
        device_ids = () if entry.gpu_index is None else (device_id(entry, id_format),)
        targets.append(
            Target(
                service=entry.service,
                device_ids=device_ids,
                budget_gb=entry.budget_gb if entry.budget_adjustable else None,
                latency_critical=demand.latency_critical,
                # No saved override: the container keeps its budget (the files write none).
                keep_budget=not entry.budget_saved,
                labels=labels.get(entry.service, {}),
            )
        )
    return targets


def run_stall(run: ApplyRun | None, *, now=None) -> str:
    """Why an unfinished run is not moving, for the status API, the page and ``/readyz``; empty
    while it is (or when it has finished). A running run whose heartbeat is overdue lost its
    worker; a queued one waits for a worker when none beats its heart."""
    if run is None or run.is_finished:
        return ""
    now = now or timezone.now()
    if run.status == ApplyRun.Status.RUNNING:
        beat = run.heartbeat_at or run.started_at or run.created_at
        if (now - beat).total_seconds() > float(settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT):
            return "Apply stalled: the worker stopped; repair waits for a worker."
        return ""
    if not worker_alive():
        return "No worker is running; the apply waits for one (start it: gpuconfig worker)."
    return ""


def apply_status(*, snapshot: dict | None, data: PlanningInput | None = None) -> dict:
    """The latest apply's progress plus each service's container state (``services_live``)
    from ``snapshot``, the engine's answer the caller read; ``data``: the planning input when
    the caller has read it already."""
    run = apply_run_latest()
    entries = progress.progress_get(str(run.operation_id)) if run else []
    in_progress = bool(run and not run.is_finished)
    return {
        "run": run,
        "stall": run_stall(run),
        "in_progress": in_progress,
        "services_pending": [e["service"] for e in entries if e["status"] not in progress.TERMINAL],
        "services_completed": [e["service"] for e in entries if e["status"] in progress.TERMINAL],
        "service_statuses": [
            {
                "service": e["service"],
                "status": e["status"],
                "message": e.get("message", ""),
                "elapsed_s": e.get("elapsed_s"),
                # How the service moves, why, and how long it did not answer (moves.py).
                "move_mode": e.get("move_mode"),
                "move_reason": e.get("move_reason", ""),
                "downtime_s": e.get("downtime_s"),
            }
            for e in entries
        ],
        "services": services_live(
            snapshot=snapshot,
            restart={e["service"]: e["status"] for e in entries},
            data=data,
        ),
    }


def services_live(
    *,
    snapshot: dict | None,
    restart: dict[str, str] | None = None,
    data: PlanningInput | None = None,
) -> list[dict]:
    """Each enabled service's container status and health from ``snapshot``, the engine's
    answer the caller read (``applies.live``: ``live_refresh`` asks the engine,
    ``live_cached`` reads the stored copy; None: none stored). The engine being unreachable
    is reported per service (status ``unknown``), not raised."""
    return service_rows(snapshot, restart=restart, data=data)


def _last_outcomes(limit: int = 20) -> dict[str, dict]:
    """Per service: the outcome of the last finished apply that touched it, and when; kept in
    the cache while no run changed (``applies.run_reads``)."""
    return runs_read_cached(f"outcomes:{limit}", lambda: _last_outcomes_read(limit))


def _last_outcomes_read(limit: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    # Only the two columns read: a run's log and journal can be long.
    runs = (
        ApplyRun.objects.exclude(finished_at=None)
        .order_by("-finished_at")
        .values_list("finished_at", "results")[:limit]
    )
    for finished_at, results in runs:
        for service, result in (results or {}).items():
            out.setdefault(service, {"outcome": result.get("outcome"), "finished_at": finished_at})
    return out


def running_gpu_index(container: dict | None, by_device: dict[str, int]) -> int | None:
    """The index of the GPU a container's device request names (an index or a UUID), or None
    when there is no container, it has no GPU, or its device is not a known GPU."""
    for device in (container or {}).get("device_ids") or ():
        if device in by_device:
            return by_device[device]
    return None


def service_rows(
    snapshot: dict | None,
    *,
    restart: dict[str, str] | None = None,
    data: PlanningInput | None = None,
) -> list[dict]:
    """One row per enabled service: container status and health, the GPU it runs on now
    (``gpu_index``) beside the saved one (``assigned_gpu_index``; ``pending_apply`` while they
    differ), runtime, last restart by gpuconfig and the last apply's outcome for it, and its
    measured VRAM (now, peak and p95 over ``GPUCONFIG_VRAM_WINDOW``; None when never measured)
    (``data``: the planning input, if read)."""
    data = data or planning_input_cached()
    restart = restart or {}
    outcomes = _last_outcomes()
    snapshot = snapshot or {}
    containers = snapshot.get("containers", {})
    reachable = snapshot.get("reachable")
    by_device = {str(g.index): g.index for g in data.gpus} | {g.uuid: g.index for g in data.gpus}
    out = []
    for d in data.services:
        container = containers.get(d.name)
        if container is not None:
            status, health = container["status"], container["health"]
        else:
            status = "missing" if reachable else "unknown"
            health = "unknown"
        last = outcomes.get(d.name) or {}
        running = running_gpu_index(container, by_device)
        row = {
            "name": d.name,
            "status": status,
            "health": health,
            # Where the container runs now; the saved target apart. They differ until an apply.
            "gpu_index": running,
            "assigned_gpu_index": d.current_gpu,
            "pending_apply": container is not None and running != d.current_gpu,
            "restart_status": restart.get(d.name),
            "runtime": snapshot.get("runtime"),
            "container": (container or {}).get("id", ""),
            "device_ids": (container or {}).get("device_ids"),
            "started_at": last.get("finished_at") if last.get("outcome") == "healthy" else None,
            "last_apply": last.get("outcome"),
        }
        measured = data.measured.get(d.name)
        row["vram_used_mb"] = measured.now_mb if measured else None
        row["vram_peak_mb"] = measured.peak_mb if measured else None
        row["vram_p95_mb"] = measured.p95_mb if measured else None
        if reachable is False:
            row["error"] = snapshot.get("error", "")
        out.append(row)
    return out
