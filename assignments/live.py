"""The services' live container state, kept in the cache.

The worker (periodically under beat, and while an apply runs) and the API ask the engine and
store what it said (``live_refresh``); the page only reads that copy (``live_cached``), so
rendering it never waits on the engine. ``service_rows`` shapes one row per service for the
services panel and ``/gpu-config/services`` alike. The demo runtime's switch lives here too.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

from assignments.models import ApplyRun
from assignments.selectors import PlanningInput, planning_input, planning_input_cached
from gpuconfig_site.read_memo import cache_read, forget, share
from gpuconfig_site.redis_health import unknown_while_redis_is_down

LIVE_KEY = share("runtime:live")  # read once per page render
LIVE_REFRESH_LOCK = "runtime:live:refreshing"
LIVE_STALE_S = 10
HEALTH = ("healthy", "unhealthy", "starting", "none", "unknown")
NO_ENGINE_HELP = (
    "Start Docker or Podman on this machine, or point gpuconfig at its socket with "
    "DOCKER_HOST or CONTAINER_HOST (e.g. unix:///run/podman/podman.sock), then reload."
)


def health_of(status: str | None, health: str | None) -> str:
    """A container's health as one of ``HEALTH``: ``none`` when it defines no healthcheck,
    ``unknown`` when there is no container or the engine did not say."""
    if status is None:
        return "unknown"
    if health in ("healthy", "unhealthy", "starting"):
        return health
    return "none" if health is None else "unknown"


def live_refresh() -> dict:
    """Ask the engine for every service's container and keep the answer in the cache."""
    from assignments.runtime import get_runtime
    from assignments.runtime.base import EngineError, RuntimeUnavailable

    data = planning_input()
    snapshot: dict = {"checked_at": time.time(), "containers": {}, "error": ""}
    try:
        runtime = get_runtime()
        snapshot["runtime"] = runtime.name
        snapshot["runtime_label"] = getattr(runtime, "label", runtime.name.capitalize())
        for d in data.services:
            state = runtime.inspect(d.name)
            snapshot["containers"][d.name] = (
                None
                if state is None
                else {
                    "id": state.id[:12],
                    "name": state.name,
                    "status": state.status,
                    "health": health_of(state.status, state.health),
                    "device_ids": list(state.device_ids),
                }
            )
        snapshot["reachable"] = True
    except (RuntimeUnavailable, EngineError) as exc:
        snapshot.update(reachable=False, error=str(exc))
        # With `auto`, no engine answered, so none is in use.
        setting = getattr(settings, "GPUCONFIG_CONTAINER_RUNTIME", None) or "auto"
        snapshot.setdefault("runtime", None if setting == "auto" else setting)
        snapshot.setdefault("runtime_label", (snapshot["runtime"] or "").capitalize())
    cache.set(LIVE_KEY, snapshot, 24 * 3600)
    forget(LIVE_KEY)
    return snapshot


@unknown_while_redis_is_down()
def live_cached() -> dict | None:
    """The last stored answer of the engine, or None when none was stored yet."""
    return cache_read(LIVE_KEY)


@unknown_while_redis_is_down()
def live_refresh_request() -> None:
    """Have the worker refresh the stored state when it is older than ``LIVE_STALE_S`` (one
    request at a time); the caller does not wait for it."""
    from assignments.tasks import live_refresh_task

    snapshot = live_cached()
    if snapshot and time.time() - snapshot["checked_at"] < LIVE_STALE_S:
        return
    if cache.add(LIVE_REFRESH_LOCK, 1, LIVE_STALE_S):
        live_refresh_task.delay()


def live_stored() -> dict | None:
    """The stored state for a request that must not wait on the engine: read once (raising
    while Redis is away), with a refresh asked of the worker when it is stale (one request at
    a time, as ``live_refresh_request``)."""
    from assignments.tasks import live_refresh_task

    snapshot = cache.get(LIVE_KEY)
    if snapshot and time.time() - snapshot["checked_at"] < LIVE_STALE_S:
        return snapshot
    if cache.add(LIVE_REFRESH_LOCK, 1, LIVE_STALE_S):
        live_refresh_task.delay()
        # A worker that ran it inline (tests, or no broker) has stored a fresh copy already.
        snapshot = cache.get(LIVE_KEY) or snapshot
    return snapshot


def _last_outcomes(limit: int = 20) -> dict[str, dict]:
    """Per service: the outcome of the last finished apply that touched it, and when; kept in
    the cache while no run changed (``assignments.run_reads``)."""
    from assignments.run_reads import runs_read_cached

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


# --- the demo runtime ------------------------------------------------------------------------


def demo_runtime_enable() -> None:
    """Switch on "Simulated containers": one healthy container per service, running as the
    saved configuration says, on the simulated GPUs."""
    from assignments.runtime.simulated import simulated_runtime_enable
    from assignments.selectors import apply_targets

    data = planning_input()
    simulated_runtime_enable(
        containers=[(t.service, t.device_ids, t.budget_gb) for t in apply_targets(data)],
        gpu_capacity_mb={
            key: g.total_mb - g.foreign_used_mb
            for g in data.gpus
            if g.available
            for key in (str(g.index), g.uuid)
        },
        service_need_mb={d.name: d.need_mb for d in data.services},
    )
    live_refresh()


def demo_runtime_disable() -> None:
    from assignments.runtime.simulated import simulated_runtime_disable

    simulated_runtime_disable()
    live_refresh()
