"""Applies room. A demo container runtime: "Simulated containers".

It lets the whole guide flow (save, apply, watch the restarts, see health) be tried on a machine
with simulated GPUs and no container engine. Its containers live in Django's cache (Redis in
production), one key per service, so the web process and the worker see the same ones.

It is used only when switched on (``simulated_runtime_enable``) while the configured engine does
not answer, or when ``GPUCONFIG_CONTAINER_RUNTIME=simulated`` names it; never in place of an
engine that answers (``demo_fallback``).

Health follows the plan: a container whose GPU would hold more VRAM than it has does not become
healthy, and is rolled back like a real one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping

from django.conf import settings
from django.core.cache import cache

from gpuconfig_site.read_memo import cache_read, forget, share
from gpuconfig_site.redis_health import unknown_while_redis_is_down

from .base import (
    ContainerRuntime,
    ContainerState,
    Journal,
    Outcome,
    Progress,
    RecreateResult,
    RuntimeUnavailable,
    Step,
)

LABEL = "Simulated containers"
ENABLED_KEY = share("simulated-runtime:enabled")  # read once per page render
GPUS_KEY = "simulated-runtime:gpus"
SERVICES_KEY = "simulated-runtime:services"
PROBE_SERVICE = "gpuconfig-engine-probe"


def _container_key(service: str) -> str:
    return f"simulated-runtime:container:{service}"


def _step_delay() -> float:
    return float(getattr(settings, "GPUCONFIG_SIMULATED_RUNTIME_STEP", 0.6))


@unknown_while_redis_is_down(default=False)
def simulated_runtime_enabled() -> bool:
    try:
        return bool(cache_read(ENABLED_KEY))
    except Exception:  # the cache (Redis) is down: the demo is off, the real engine still answers
        return False


def simulated_runtime_enable(
    *,
    containers: Iterable[tuple[str, tuple[str, ...], float | None]],
    gpu_capacity_mb: Mapping[str, int],
    service_need_mb: Mapping[str, int],
) -> None:
    """Switch the demo on with one running, healthy container per service, as given by
    ``containers`` (service, device ids, VRAM budget in GB). ``gpu_capacity_mb`` is the VRAM
    each device id can give the services; ``service_need_mb`` what each service takes without a
    budget."""
    cache.set(GPUS_KEY, dict(gpu_capacity_mb), None)
    cache.set(SERVICES_KEY, dict(service_need_mb), None)
    cache.set_many(
        {
            _container_key(service): _container(service, device_ids, budget_gb, health="healthy")
            for service, device_ids, budget_gb in containers
        },
        None,
    )
    cache.set(ENABLED_KEY, True, None)
    forget(ENABLED_KEY)


def simulated_runtime_disable() -> None:
    services = cache.get(SERVICES_KEY) or {}
    cache.delete_many([ENABLED_KEY, GPUS_KEY, SERVICES_KEY, *map(_container_key, services)])
    forget(ENABLED_KEY)


def _container(
    service: str, device_ids: tuple[str, ...], budget_gb: float | None, *, health: str
) -> dict:
    return {
        "id": uuid.uuid4().hex,
        "name": service,
        "status": "running",
        "health": health,
        "device_ids": list(device_ids),
        "budget_gb": budget_gb,
        "started_at": time.time(),
    }


def demo_fallback(runtime: ContainerRuntime, *, build: Callable[[], ContainerRuntime]):
    """``runtime``, unless the demo is on and ``runtime``'s engine does not answer: then the
    simulated runtime ``build()`` makes. An engine that answers is always preferred."""
    if isinstance(runtime, SimulatedRuntime) or not simulated_runtime_enabled():
        return runtime
    try:
        runtime.inspect(PROBE_SERVICE)
    except RuntimeUnavailable:
        return build()
    return runtime


class SimulatedRuntime(ContainerRuntime):
    """The ``ContainerRuntime`` contract over containers kept in the cache (no engine)."""

    name = "simulated"
    label = LABEL

    # -- state ---------------------------------------------------------------------------------

    def _get(self, service: str) -> dict | None:
        return cache.get(_container_key(service))

    def _put(self, service: str, container: dict) -> None:
        cache.set(_container_key(service), container, None)

    def _need_mb(self, service: str, budget_gb: float | None) -> int:
        if budget_gb is not None:
            return round(budget_gb * 1024)
        return int((cache.get(SERVICES_KEY) or {}).get(service, 0))

    def _fits(self, service: str, device_ids: tuple[str, ...], budget_gb: float | None) -> str:
        """Empty when ``service`` fits on its devices next to the running containers, else why
        not."""
        capacity = cache.get(GPUS_KEY) or {}
        services = cache.get(SERVICES_KEY) or {}
        others = cache.get_many([_container_key(s) for s in services if s != service])
        for device in device_ids:
            if device not in capacity:
                return f"GPU {device} does not exist"
            used = sum(
                self._need_mb(c["name"], c.get("budget_gb"))
                for c in others.values()
                if c.get("status") == "running" and device in c.get("device_ids", [])
            )
            need = self._need_mb(service, budget_gb)
            if used + need > capacity[device]:
                return (
                    f"CUDA out of memory on GPU {device}: needs {need / 1024:.1f} GB, "
                    f"{max(capacity[device] - used, 0) / 1024:.1f} GB free"
                )
        return ""

    # -- the contract --------------------------------------------------------------------------

    def inspect(self, service: str) -> ContainerState | None:
        c = self._get(service)
        if c is None:
            return None
        return ContainerState(
            id=c["id"],
            name=c["name"],
            status=c["status"],
            health=c.get("health"),
            device_ids=tuple(c.get("device_ids", ())),
            budget_gb=c.get("budget_gb"),
        )

    def recover(self, journal: dict[str, dict] | None = None) -> list[str]:
        return []  # nothing is ever left renamed aside

    def recreate(
        self,
        service: str,
        *,
        device_ids: tuple[str, ...],
        budget_gb: float | None,
        progress: Progress,
        before_start: Callable[[], None] | None = None,
        health_timeout: float | None = None,
        labels: Mapping[str, str] | None = None,
        journal: Journal | None = None,
    ) -> RecreateResult:
        old = self._get(service)
        if old is None:
            return RecreateResult(Outcome.FAILED, f"no container for {service}")
        delay = _step_delay()
        target = f"GPU {','.join(device_ids) or 'none'}"
        progress(Step.STOPPING, f"stopping {service}")
        time.sleep(delay)
        self._put(service, {**old, "status": "exited", "health": None})
        if before_start is not None:
            try:
                before_start()
            except Exception as exc:
                return self._rollback(service, old, str(exc) or type(exc).__name__, progress)
        progress(Step.RECREATING, f"creating {service} on {target}")
        time.sleep(delay)
        new = _container(service, device_ids, budget_gb, health="starting")
        progress(Step.STARTING, f"starting {service}")
        self._put(service, new)
        progress(Step.WAITING_HEALTH, f"waiting for {service} to become healthy")
        time.sleep(delay)
        problem = self._fits(service, device_ids, budget_gb)
        if problem:
            self._put(service, {**new, "health": "unhealthy"})
            time.sleep(delay)
            return self._rollback(service, old, f"did not become healthy: {problem}", progress)
        self._put(service, {**new, "health": "healthy"})
        message = f"{service} healthy on {target}"
        progress(Step.HEALTHY, message)
        return RecreateResult(Outcome.HEALTHY, message, container_id=new["id"])

    def _rollback(self, service: str, old: dict, reason: str, progress: Progress) -> RecreateResult:
        self._put(service, {**old, "status": "running", "health": "healthy"})
        message = f"rolled back to the previous container: {reason}"
        progress(Step.ROLLED_BACK, message)
        return RecreateResult(Outcome.ROLLED_BACK, message, container_id=old["id"])
