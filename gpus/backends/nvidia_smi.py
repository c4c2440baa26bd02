"""GPU detection by running ``nvidia-smi`` and parsing its CSV query output."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import os
import shutil
import signal
import subprocess

from django.conf import settings

from .base import BackendError, BackendUnavailable, GpuBackend, GpuReading

logger = logging.getLogger(__name__)

QUERY_FIELDS = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "memory.total",
    # Not memory.used: since driver 510 nvidia-smi leaves the driver's reserve (memory.reserved,
    # a few hundred MiB) out of it, while NVML's used figure counts it. total - free is the same
    # figure from both backends, and it is what the services cannot have.
    "memory.free",
    "compute_cap",
    "utilization.gpu",
    "temperature.gpu",
    "power.draw",
)
# The compute processes per GPU (NVML's compute process list), for attributing VRAM.
APPS_FIELDS = ("gpu_uuid", "pid", "used_memory")
DEFAULT_TIMEOUT_S = 10.0

# Values nvidia-smi prints for a field the GPU does not report.
_ABSENT = frozenset({"[N/A]", "N/A", "[Not Supported]", "Not Supported"})

# nvidia-smi exit codes that mean it cannot work on this machine at all (driver not loaded,
# NVML library missing), as opposed to a failed query.
_UNAVAILABLE_EXIT_CODES = frozenset({9, 12})
_NO_DEVICES = "No devices were found"

_QUOTE_LIMIT = 300


def _quote(text: str) -> str:
    text = text.strip()
    if len(text) > _QUOTE_LIMIT:
        text = text[:_QUOTE_LIMIT] + "..."
    return repr(text)


class _BadValue(ValueError):
    """A value that is not what the field should hold: the output cannot be trusted."""


class _GpuFault(ValueError):
    """A bracketed error in place of a value ("[GPU is lost]", "[Unknown Error]")."""


def _value(raw: str, convert, field: str):
    """None for a value the GPU does not report, else the value converted."""
    if raw in _ABSENT:
        return None
    if raw.startswith("[") and raw.endswith("]"):
        raise _GpuFault(f"{field} is {raw}")
    try:
        return convert(raw)
    except ValueError:
        raise _BadValue(f"{field} is {raw!r}") from None


def _optional(raw: str, convert, field: str):
    """Like ``_value``, but a field the GPU failed to read is None rather than a fault."""
    try:
        return _value(raw, convert, field)
    except _GpuFault:
        return None


def _capability(raw: str) -> tuple[int, int]:
    major, _, minor = raw.partition(".")
    return int(major), int(minor)


class NvidiaSmiBackend(GpuBackend):
    """Reads the GPUs by running ``nvidia-smi --query-gpu=... --format=csv``.

    Unavailable when the binary is not on PATH, or when it says the driver or NVML is missing
    (exit codes 9 and 12). Any other non-zero exit, a run past ``GPUCONFIG_NVIDIA_SMI_TIMEOUT``
    seconds, or output that does not parse raises ``BackendError`` quoting what it printed.
    "[N/A]" and "[Not Supported]" values are None. A GPU whose memory reads as an error
    ("[GPU is lost]", "[Unknown Error]") is reported with ``lost=True``. The compute processes
    come from a second call, ``--query-compute-apps``; when it fails the GPUs are reported
    without processes (a warning is logged).
    """

    name = "nvidia-smi"

    def scan(self) -> list[GpuReading]:
        binary = shutil.which("nvidia-smi")
        if binary is None:
            raise BackendUnavailable("nvidia-smi is not installed (not found on PATH)")
        timeout = float(getattr(settings, "GPUCONFIG_NVIDIA_SMI_TIMEOUT", DEFAULT_TIMEOUT_S))
        command = [
            binary,
            "--query-gpu=" + ",".join(QUERY_FIELDS),
            "--format=csv,noheader,nounits",
        ]
        returncode, stdout, stderr = self._run(command, timeout)
        output = (stdout + "\n" + stderr).strip()
        if returncode != 0:
            if _NO_DEVICES in output:
                return []
            if returncode in _UNAVAILABLE_EXIT_CODES:
                raise BackendUnavailable(f"nvidia-smi cannot reach the driver: {_quote(output)}")
            raise BackendError(f"nvidia-smi exited with status {returncode}: {_quote(output)}")
        readings = self._parse(stdout)
        if not readings:
            return readings
        apps = self._apps(binary, timeout)
        if apps is None:
            return readings
        return [
            dataclasses.replace(
                r,
                processes=tuple(apps.get(r.uuid, ())),
                processes_used_mb=sum(used for _, used in apps.get(r.uuid, ())),
            )
            if not r.lost
            else r
            for r in readings
        ]

    def _apps(self, binary: str, timeout: float) -> dict[str, list[tuple[int, int]]] | None:
        """(pid, MiB) per GPU UUID from ``--query-compute-apps``; None when it cannot be read."""
        command = [
            binary,
            "--query-compute-apps=" + ",".join(APPS_FIELDS),
            "--format=csv,noheader,nounits",
        ]
        try:
            returncode, stdout, stderr = self._run(command, timeout)
        except (BackendError, BackendUnavailable) as error:
            logger.warning("nvidia-smi: the GPU processes cannot be listed: %s", error)
            return None
        if returncode != 0:
            logger.warning(
                "nvidia-smi: the GPU processes cannot be listed (status %s): %s",
                returncode,
                _quote(stdout + stderr),
            )
            return None
        apps: dict[str, list[tuple[int, int]]] = {}
        lines = [line for line in stdout.splitlines() if line.strip()]
        for row in csv.reader(lines, skipinitialspace=True):
            row = [value.strip() for value in row]
            if len(row) != len(APPS_FIELDS) or not row[1].isdigit():
                logger.warning("nvidia-smi: unreadable process line %s", _quote(", ".join(row)))
                return None
            used = int(row[2]) if row[2].isdigit() else 0  # [N/A]: not attributable
            apps.setdefault(row[0], []).append((int(row[1]), used))
        return apps

    @staticmethod
    def _run(command: list[str], timeout: float) -> tuple[int, str, str]:
        # A session of its own, so a timeout kills anything it started too; otherwise a child
        # holding the pipes open would keep communicate() waiting after the kill.
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                start_new_session=True,
            )
        except OSError as error:
            raise BackendUnavailable(f"nvidia-smi cannot be run: {error}") from error
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            try:
                stdout, stderr = process.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                # Something escaped the session and still holds the pipes: stop reading.
                process.wait()
                stdout, stderr = "", ""
            raise BackendError(
                f"nvidia-smi did not answer within {timeout:g} s: {_quote(stdout + stderr)}"
            ) from None
        return process.returncode, stdout, stderr

    @staticmethod
    def _parse(stdout: str) -> list[GpuReading]:
        readings = []
        lines = [line for line in stdout.splitlines() if line.strip()]
        for row in csv.reader(lines, skipinitialspace=True):
            line = ", ".join(row)
            if len(row) != len(QUERY_FIELDS):
                raise BackendError(
                    f"nvidia-smi printed {len(row)} fields where {len(QUERY_FIELDS)} were "
                    f"expected: {_quote(line)}"
                )
            row = [value.strip() for value in row]
            index_raw, uuid, name, bus_id = row[:4]
            if not index_raw.isdigit() or not uuid or uuid.startswith("[") or not name:
                raise BackendError(
                    f"nvidia-smi printed a GPU without index or UUID: {_quote(line)}"
                )
            index = int(index_raw)
            try:
                known = {
                    "index": index,
                    "uuid": uuid,
                    "name": name,
                    "pci_bus_id": _optional(bus_id, str, "pci.bus_id"),
                }
                try:
                    total = _value(row[4], int, "memory.total")
                    free = _value(row[5], int, "memory.free")
                except _GpuFault:
                    readings.append(GpuReading(**known, lost=True))
                    continue
                readings.append(
                    GpuReading(
                        **known,
                        vram_total_mb=total,
                        vram_used_mb=None if total is None or free is None else total - free,
                        compute_capability=_optional(row[6], _capability, "compute_cap"),
                        utilization_percent=_optional(row[7], int, "utilization.gpu"),
                        temperature_c=_optional(row[8], int, "temperature.gpu"),
                        power_w=_optional(row[9], float, "power.draw"),
                    )
                )
            except _BadValue as error:
                raise BackendError(f"nvidia-smi printed {error}: {_quote(line)}") from None
        readings.sort(key=lambda reading: reading.index)
        return readings
