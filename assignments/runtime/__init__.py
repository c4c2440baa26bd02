"""The container runtime in use, chosen by ``GPUCONFIG_CONTAINER_RUNTIME`` when it is asked for."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .base import (
    ContainerRuntime,
    ContainerState,
    Outcome,
    Progress,
    RecreateResult,
    RuntimeError_,
    RuntimeUnavailable,
    Step,
)

RUNTIMES: dict[str, str] = {
    "docker": "assignments.runtime.docker.DockerRuntime",
    "simulated": "assignments.runtime.simulated.SimulatedRuntime",
}

__all__ = [
    "RUNTIMES",
    "ContainerRuntime",
    "ContainerState",
    "Outcome",
    "Progress",
    "RecreateResult",
    "RuntimeError_",
    "RuntimeUnavailable",
    "Step",
    "get_runtime",
]


def get_runtime(name: str | None = None) -> ContainerRuntime:
    """Build the configured runtime (``GPUCONFIG_CONTAINER_RUNTIME``, default ``docker``).

    The value is a registered name or, like Django's backend settings, the dotted path of a
    ``ContainerRuntime`` subclass. Settings are read here, on every call, never at import.
    """
    choice = name or getattr(settings, "GPUCONFIG_CONTAINER_RUNTIME", None) or "docker"
    path = RUNTIMES.get(choice, choice if "." in choice else None)
    if path is None:
        raise ImproperlyConfigured(
            f"GPUCONFIG_CONTAINER_RUNTIME={choice!r} is not a known container runtime "
            f"(known: {', '.join(sorted(RUNTIMES))}, or the dotted path of a ContainerRuntime)"
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
    options = {
        "project": getattr(settings, "GPUCONFIG_COMPOSE_PROJECT", None) or None,
        "health_timeout": float(getattr(settings, "GPUCONFIG_HEALTH_TIMEOUT", 180)),
        "health_grace": float(getattr(settings, "GPUCONFIG_HEALTH_GRACE", 3)),
    }
    # The demo runtime, when switched on, stands in only for an engine that does not answer.
    from .simulated import SimulatedRuntime, demo_fallback

    return demo_fallback(runtime_class(**options), build=lambda: SimulatedRuntime(**options))
