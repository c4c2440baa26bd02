"""GPU detection through NVML, the library behind nvidia-smi, via the ``pynvml`` bindings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import pynvml

from .base import BackendError, BackendUnavailable, GpuBackend, GpuReading

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MIB = 2**20

# NVML answers that mean "this machine has no usable NVML", not "NVML failed".
_UNAVAILABLE_CODES = frozenset(
    {
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
    }
)

# The GPU stopped answering: fallen off the bus, waiting for a reset.
_LOST_CODES = frozenset(
    {
        pynvml.NVML_ERROR_GPU_IS_LOST,
        pynvml.NVML_ERROR_RESET_REQUIRED,
        getattr(pynvml, "NVML_ERROR_GPU_NOT_FOUND", 28),
    }
)

# A field this GPU, driver or container does not report: left None, not an error.
_ABSENT_CODES = frozenset(
    {
        pynvml.NVML_ERROR_NOT_SUPPORTED,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        pynvml.NVML_ERROR_NO_PERMISSION,
    }
)


class _GpuLost(Exception):
    """Internal: a call on one GPU said the GPU is gone."""

    def __init__(self, error: pynvml.NVMLError) -> None:
        super().__init__(str(error))
        self.error = error


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _essential(call: Callable[[], T]) -> T | None:
    """A field a usable GPU must report: any NVML failure but "not supported" means lost."""
    try:
        return call()
    except pynvml.NVMLError as error:
        if error.value in _ABSENT_CODES:
            return None
        raise _GpuLost(error) from error


def _optional(call: Callable[[], T], what: str, index: int) -> T | None:
    """A field that may be missing: None when unsupported or failing, lost when the GPU is."""
    try:
        return call()
    except pynvml.NVMLLibraryMismatchError:
        return None
    except pynvml.NVMLError as error:
        if error.value in _LOST_CODES:
            raise _GpuLost(error) from error
        if error.value not in _ABSENT_CODES:
            logger.warning("NVML: GPU %d: reading %s failed: %s", index, what, error)
        return None


class NvmlBackend(GpuBackend):
    """Reads the GPUs through NVML (``libnvidia-ml.so.1``, loaded by ``pynvml``).

    Unavailable when the library cannot be loaded or the driver is not running. A field the GPU
    does not support is None. A GPU that is listed but no longer answers (``GPU_IS_LOST``, reset
    required, or any failure on its name or memory) is reported with ``lost=True`` when its UUID
    can still be read, and skipped with a warning when not: without a UUID it cannot be matched
    to the inventory.
    """

    name = "nvml"

    def scan(self) -> list[GpuReading]:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            if error.value in _UNAVAILABLE_CODES:
                raise BackendUnavailable(f"NVML is not available: {error}") from error
            raise BackendError(f"NVML failed to initialise: {error}") from error
        try:
            try:
                count = pynvml.nvmlDeviceGetCount()
            except pynvml.NVMLError as error:
                raise BackendError(f"NVML could not count the GPUs: {error}") from error
            readings = []
            for index in range(count):
                reading = self._read(index)
                if reading is not None:
                    readings.append(reading)
            return readings
        finally:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as error:
                logger.warning("NVML: shutdown failed: %s", error)

    def _read(self, index: int) -> GpuReading | None:
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except pynvml.NVMLError as error:
            logger.warning(
                "NVML: GPU %d skipped, no handle (its UUID is unknown): %s", index, error
            )
            return None
        try:
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError as error:
            logger.warning("NVML: GPU %d skipped, its UUID cannot be read: %s", index, error)
            return None

        fields: dict[str, object] = {}
        try:
            name = _essential(lambda: pynvml.nvmlDeviceGetName(handle))
            fields["name"] = _text(name) if name is not None else ""
            memory = _essential(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
            if memory is not None:
                fields["vram_total_mb"] = memory.total // _MIB
                fields["vram_used_mb"] = memory.used // _MIB
            self._read_optional(handle, index, fields)
        except _GpuLost as lost:
            logger.warning("NVML: GPU %d (%s) is lost: %s", index, uuid, lost.error)
            return GpuReading(index=index, uuid=uuid, name=str(fields.get("name", "")), lost=True)
        return GpuReading(index=index, uuid=uuid, **fields)

    @staticmethod
    def _read_optional(handle: object, index: int, fields: dict[str, object]) -> None:
        pci = _optional(lambda: pynvml.nvmlDeviceGetPciInfo(handle), "PCI info", index)
        if pci is not None:
            fields["pci_bus_id"] = _text(pci.busId)
        capability = _optional(
            lambda: pynvml.nvmlDeviceGetCudaComputeCapability(handle), "compute capability", index
        )
        if capability is not None:
            fields["compute_capability"] = (int(capability[0]), int(capability[1]))
        utilization = _optional(
            lambda: pynvml.nvmlDeviceGetUtilizationRates(handle), "utilization", index
        )
        if utilization is not None:
            fields["utilization_percent"] = int(utilization.gpu)
        fields["temperature_c"] = _optional(
            lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "temperature",
            index,
        )
        power_mw = _optional(lambda: pynvml.nvmlDeviceGetPowerUsage(handle), "power", index)
        if power_mw is not None:
            fields["power_w"] = power_mw / 1000
        processes = _optional(
            lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(handle), "processes", index
        )
        if processes is not None:
            listed = _listed(processes)
            fields["processes"] = listed
            fields["processes_used_mb"] = sum(used for _, used in listed)
        graphics = _optional(
            lambda: pynvml.nvmlDeviceGetGraphicsRunningProcesses(handle),
            "graphics processes",
            index,
        )
        if graphics is not None:
            fields["graphics_processes"] = _listed(graphics)


def _listed(processes) -> tuple[tuple[int, int], ...]:
    # usedGpuMemory is None where the driver cannot attribute memory to a process.
    return tuple((int(p.pid), (p.usedGpuMemory or 0) // _MIB) for p in processes)
