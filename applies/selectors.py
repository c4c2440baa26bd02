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
from assignments.files.entries import device_id
from assignments.selectors import PlanningInput, config_entries, planning_input
from gpuconfig_site.health import worker_alive


def apply_run_list(*, limit: int = 10) -> QuerySet[ApplyRun]:
    return ApplyRun.objects.select_related("requested_by")[:limit]


def apply_run_latest() -> ApplyRun | None:
    return ApplyRun.objects.order_by("-created_at", "-pk").first()


def apply_targets(data: PlanningInput | None = None) -> list[Target]:
    """What each enabled service should run with: device ids (in the configured format), its
    VRAM budget when one is saved, and the compose labels of the written files."""
    from assignments.files.project import config_labels

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


def apply_status(
    *, live: bool = True, data: PlanningInput | None = None, snapshot: dict | None = None
) -> dict:
    """The latest apply's progress plus each service's container state (``services_live``);
    ``data``, ``snapshot``: the planning input and the stored engine state when the caller has
    read them already."""
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
            restart={e["service"]: e["status"] for e in entries},
            live=live,
            data=data,
            snapshot=snapshot,
        ),
    }


def services_live(
    *,
    restart: dict[str, str] | None = None,
    live: bool = True,
    data: PlanningInput | None = None,
    snapshot: dict | None = None,
) -> list[dict]:
    """Each enabled service's container status and health: asked of the engine now (``live``,
    which also refreshes the stored copy), else the copy the worker keeps (no engine call).
    The engine being unreachable is reported per service (status ``unknown``), not raised."""
    from applies.live import live_cached, live_refresh, service_rows

    if snapshot is None:
        snapshot = live_refresh() if live else live_cached()
    return service_rows(snapshot, restart=restart, data=data)
