"""Applies room. The container runtime in use, chosen by ``GPUCONFIG_CONTAINER_RUNTIME`` when it is
asked for."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from gpuconfig_site.hosts import host_is_local, host_name

from .base import (
    ContainerRuntime,
    ContainerState,
    EngineError,
    Journal,
    JournalStep,
    Outcome,
    Progress,
    RecreateResult,
    RuntimeUnavailable,
    Step,
)
from .simulated import SimulatedRuntime, demo_fallback, simulated_runtime_enabled
from .sockets import auto_candidates, resolve

RUNTIMES: dict[str, str] = {
    "docker": "applies.runtime.docker.DockerRuntime",
    "podman": "applies.runtime.podman.PodmanRuntime",
    "simulated": "applies.runtime.simulated.SimulatedRuntime",
}
AUTO = "auto"

__all__ = [
    "RUNTIMES",
    "ContainerRuntime",
    "ContainerState",
    "Journal",
    "JournalStep",
    "Outcome",
    "Progress",
    "RecreateResult",
    "EngineError",
    "RuntimeUnavailable",
    "Step",
    "get_runtime",
]


def get_runtime(name: str | None = None) -> ContainerRuntime:
    """Build the configured runtime (``GPUCONFIG_CONTAINER_RUNTIME``, default ``auto``).

    The value is ``auto`` (ask the engine that answers which it is: ``sockets.py``), a
    registered name or, like Django's backend settings, the dotted path of a
    ``ContainerRuntime`` subclass. Settings are read here, on every call, never at import.
    ``auto`` raises ``RuntimeUnavailable`` when no engine answers.
    """
    # Another host's engine is reached by its own agent only: no engine socket crosses the
    # network, and this machine's engine is never taken for another host's.
    if not host_is_local():
        raise RuntimeUnavailable(
            f"The containers of host {host_name()!r} are reached through its agent only, "
            "not from this machine."
        )
    # The demo runtime, when switched on, stands in only for an engine that does not answer.
    choice = name or getattr(settings, "GPUCONFIG_CONTAINER_RUNTIME", None) or AUTO
    options = {
        "project": getattr(settings, "GPUCONFIG_COMPOSE_PROJECT", None) or None,
        "health_timeout": float(getattr(settings, "GPUCONFIG_HEALTH_TIMEOUT", 180)),
        "health_grace": float(getattr(settings, "GPUCONFIG_HEALTH_GRACE", 3)),
    }
    engine: dict[str, str] = {}
    if choice == AUTO:
        try:
            found, choice = resolve(auto_candidates(), want=None, setting=AUTO)
        except RuntimeUnavailable:
            if simulated_runtime_enabled():
                return SimulatedRuntime(**options)
            raise
        engine["base_url"] = found.url
    path = RUNTIMES.get(choice, choice if "." in choice else None)
    if path is None:
        raise ImproperlyConfigured(
            f"GPUCONFIG_CONTAINER_RUNTIME={choice!r} is not a known container runtime "
            f"(known: {AUTO}, {', '.join(sorted(RUNTIMES))}, or the dotted path of a "
            "ContainerRuntime)"
        )
    try:
        runtime_class = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"GPUCONFIG_CONTAINER_RUNTIME={choice!r}: cannot import {path}: {exc}"
        ) from exc
    if not (isinstance(runtime_class, type) and issubclass(runtime_class, ContainerRuntime)):
        raise ImproperlyConfigured(
            f"GPUCONFIG_CONTAINER_RUNTIME={choice!r}: {path} is not a ContainerRuntime"
        )
    return demo_fallback(
        runtime_class(**options, **engine), build=lambda: SimulatedRuntime(**options)
    )
