"""Applies room. The services' live container state, kept in the cache.

The worker (periodically under beat, and while an apply runs) and the API ask the engine and
store what it said (``live_refresh``); the page only reads that copy (``live_cached``), so
rendering it never waits on the engine. ``applies.selectors.service_rows`` shapes one row per
service from it; ``applies.tasks`` asks the worker for a fresh copy. The demo runtime's switch
lives here too.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

from applies.runtime import get_runtime
from applies.runtime.base import EngineError, RuntimeUnavailable
from applies.runtime.simulated import simulated_runtime_disable, simulated_runtime_enable
from applies.selectors import apply_targets
from assignments.selectors import planning_input
from gpuconfig_site.read_memo import cache_read, forget, share, stored
from gpuconfig_site.redis_health import unknown_while_redis_is_down

LIVE_KEY = share("runtime:live", per_host=True)  # read once per page render
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
    cache.set(stored(LIVE_KEY), snapshot, 24 * 3600)
    forget(LIVE_KEY)
    return snapshot


@unknown_while_redis_is_down()
def live_cached() -> dict | None:
    """The last stored answer of the engine, or None when none was stored yet."""
    return cache_read(LIVE_KEY)


# --- the demo runtime ------------------------------------------------------------------------


def demo_runtime_enable() -> None:
    """Switch on "Simulated containers": one healthy container per service, running as the
    saved configuration says, on the simulated GPUs."""

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

    simulated_runtime_disable()
    live_refresh()
