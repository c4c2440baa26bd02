"""Choosing a GPU detection backend, and scanning with it.

``GPUCONFIG_GPU_BACKEND`` names the backend: ``auto`` (NVML, then nvidia-smi, then none),
``nvml``, ``nvidia-smi`` or ``simulated``. Setting ``GPUCONFIG_SIMULATED_GPUS`` makes ``auto``
choose the simulated backend. Settings are read when a function runs, never at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .base import BackendError, BackendUnavailable, GpuBackend, GpuReading

__all__ = [
    "AUTO",
    "AUTO_ORDER",
    "BACKENDS",
    "BackendError",
    "BackendUnavailable",
    "GpuBackend",
    "GpuReading",
    "ScanResult",
    "get_backend",
    "scan",
]

AUTO = "auto"
BACKENDS = {
    "nvml": "gpus.backends.nvml.NvmlBackend",
    "nvidia-smi": "gpus.backends.nvidia_smi.NvidiaSmiBackend",
    "simulated": "gpus.backends.simulated.SimulatedBackend",
}
AUTO_ORDER = ("nvml", "nvidia-smi")


@dataclass(frozen=True)
class ScanResult:
    """What one scan found: which backend answered (None when none could), its readings, and
    why the backends before it were passed over, in the words shown to the user."""

    backend: str | None
    readings: list[GpuReading] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _requested(name: str | None) -> str:
    """``name``, or the setting when it is None, stripped; ``auto`` when empty."""
    raw = name if name is not None else getattr(settings, "GPUCONFIG_GPU_BACKEND", AUTO)
    return str(raw or AUTO).strip() or AUTO


def _simulated_configured() -> bool:
    value = getattr(settings, "GPUCONFIG_SIMULATED_GPUS", None)
    return value is not None and not (isinstance(value, str) and not value.strip())


def get_backend(name: str | None = None) -> GpuBackend:
    """The backend called ``name`` (default: ``settings.GPUCONFIG_GPU_BACKEND``), constructed.

    ``name`` is a key of ``BACKENDS`` or the dotted path of a ``GpuBackend`` subclass.
    ``auto`` is not one backend but a choice made per scan: use ``scan()`` for it.
    Raises ``ImproperlyConfigured`` for a name that resolves to no backend.
    """
    requested = _requested(name)
    if requested.lower() == AUTO:
        raise ValueError("'auto' chooses a backend on each scan: call gpus.backends.scan()")
    path = BACKENDS.get(requested.lower()) or (requested if "." in requested else None)
    if path is None:
        choices = ", ".join([AUTO, *BACKENDS])
        raise ImproperlyConfigured(
            f"Unknown GPU backend {requested!r}; expected one of {choices} or a dotted path"
        )
    try:
        backend_class = import_string(path)
    except ImportError as error:
        raise ImproperlyConfigured(f"GPU backend {path!r} cannot be imported: {error}") from error
    if not (isinstance(backend_class, type) and issubclass(backend_class, GpuBackend)):
        raise ImproperlyConfigured(f"GPU backend {path!r} is not a GpuBackend")
    return backend_class()


def scan(name: str | None = None) -> ScanResult:
    """Scan the GPUs with backend ``name`` (default: ``settings.GPUCONFIG_GPU_BACKEND``).

    A named backend's ``BackendUnavailable`` and ``BackendError`` propagate. Under ``auto`` the
    simulated backend is used when ``GPUCONFIG_SIMULATED_GPUS`` is set; otherwise NVML, then
    nvidia-smi, and the first that runs answers, each one passed over leaving a note. When none
    can run, the result has backend None and no readings ("No GPUs detected"). When one ran and
    failed and none after it answered, ``BackendError`` is raised rather than reporting no GPUs,
    so a driver hiccup never reads as every GPU gone.
    """
    requested = _requested(name)
    if requested.lower() != AUTO:
        backend = get_backend(requested)
        return ScanResult(backend=backend.name, readings=backend.scan())
    if _simulated_configured():
        backend = get_backend("simulated")
        return ScanResult(
            backend=backend.name,
            readings=backend.scan(),
            notes=["GPUCONFIG_SIMULATED_GPUS is set: reporting the simulated GPUs"],
        )

    notes: list[str] = []
    failure: BackendError | None = None
    for candidate in AUTO_ORDER:
        backend = get_backend(candidate)
        try:
            readings = backend.scan()
        except BackendUnavailable as error:
            notes.append(f"{backend.name} skipped: {error}")
            continue
        except BackendError as error:
            notes.append(f"{backend.name} failed: {error}")
            failure = failure or error
            continue
        return ScanResult(backend=backend.name, readings=readings, notes=notes)
    if failure is not None:
        raise BackendError("; ".join(notes)) from failure
    return ScanResult(backend=None, readings=[], notes=notes)
