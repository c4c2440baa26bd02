"""The contract every GPU detection backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field


class BackendUnavailable(Exception):
    """The backend cannot run on this machine (no driver, no library, no binary).

    Under ``auto`` the next backend is tried; the message says why, for the user.
    """


class BackendError(Exception):
    """The backend ran but its answer could not be used (bad output, a call that failed)."""


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU as one scan saw it. A field the GPU does not report is None.

    ``lost`` is True for a GPU the driver still lists but that fails to answer
    (NVML ``GPU_IS_LOST`` and the like); gpuconfig treats it as unavailable.
    ``processes_used_mb`` is the VRAM held by running compute processes, when known.
    ``processes`` and ``graphics_processes`` list NVML's compute and graphics processes as
    (host PID, MiB used); a backend that cannot list them leaves them empty.
    """

    index: int
    uuid: str
    name: str
    vram_total_mb: int | None = None
    vram_used_mb: int | None = None
    compute_capability: tuple[int, int] | None = None
    utilization_percent: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    pci_bus_id: str | None = None
    processes_used_mb: int | None = None
    lost: bool = False
    processes: tuple[tuple[int, int], ...] = field(default_factory=tuple)  # (pid, used_mb)
    graphics_processes: tuple[tuple[int, int], ...] = field(default_factory=tuple)


class GpuBackend:
    """Reads the GPUs present on this machine.

    ``scan()`` returns one reading per GPU, ordered by index. It raises ``BackendUnavailable``
    when the backend cannot run here at all (the caller may fall through to another backend) and
    ``BackendError`` when it ran and failed. It never returns partial garbage. A backend holds no
    state between scans that a caller must manage; constructing one is cheap and does no I/O.
    """

    name: str = "base"

    def scan(self) -> list[GpuReading]:  # pragma: no cover - contract
        raise NotImplementedError
