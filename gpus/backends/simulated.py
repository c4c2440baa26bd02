"""GPUs described in YAML, for development, demos and tests on machines without NVIDIA GPUs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import yaml
from django.conf import settings

from gpus.models import Gpu

from .base import BackendError, BackendUnavailable, GpuBackend, GpuReading

REQUIRED_KEYS = ("index", "name", "uuid", "vram_total_mb", "vram_used_mb", "compute_capability")
OPTIONAL_KEYS = (
    "utilization_percent",
    "temperature_c",
    "power_w",
    "pci_bus_id",
    "available",
    "processes",
)
PROCESS_KEYS = ("pid", "used_mb", "kind")
SETTING = "GPUCONFIG_SIMULATED_GPUS"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_keys(entry: dict, where: str) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    if missing:
        raise BackendError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(str(key) for key in entry if key not in REQUIRED_KEYS + OPTIONAL_KEYS)
    if unknown:
        raise BackendError(f"{where}: unknown field(s) {', '.join(unknown)}")


def _limits() -> dict[str, tuple[int, int]]:
    """What the inventory's columns hold: (min, max) for numbers, (0, max_length) for text.

    Taken from the ``Gpu`` model, so a value the simulated file may give always fits the
    database (the ranges are Django's portable ones for each integer field type).
    """
    from django.db.backends.base.operations import BaseDatabaseOperations

    columns = {
        "index": "index",
        "name": "name",
        "uuid": "uuid",
        "pci_bus_id": "pci_bus_id",
        "vram_total_mb": "vram_total_mb",
        "vram_used_mb": "vram_used_mb",
        "temperature_c": "temperature_c",
        "compute_capability": "compute_capability_major",
    }
    out = {}
    for key, column in columns.items():
        field = Gpu._meta.get_field(column)
        if field.max_length:
            out[key] = (0, field.max_length)
        else:
            out[key] = BaseDatabaseOperations.integer_field_ranges[field.get_internal_type()]
    return out


def _int_in(low: int, high: int):
    return lambda v: _is_int(v) and low <= v <= high


def _text_upto(high: int):
    return lambda v: _is_text(v) and len(v.strip()) <= high


def _rules() -> tuple[tuple, tuple]:
    """(field, check, what it must be), required then optional, in the order they are checked;
    bounded by what the inventory's columns hold, so a scan never overflows them."""
    limits = _limits()
    top = {key: high for key, (_low, high) in limits.items()}
    cold, hot = limits["temperature_c"]
    required = (
        ("index", _int_in(0, top["index"]), f"a non-negative integer of at most {top['index']}"),
        ("name", _text_upto(top["name"]), f"a non-empty string of at most {top['name']} chars"),
        ("uuid", _text_upto(top["uuid"]), f"a non-empty string of at most {top['uuid']} chars"),
        (
            "vram_total_mb",
            _int_in(1, top["vram_total_mb"]),
            f"a positive integer of at most {top['vram_total_mb']}",
        ),
        (
            "vram_used_mb",
            _int_in(0, top["vram_used_mb"]),
            f"a non-negative integer of at most {top['vram_used_mb']}",
        ),
    )
    optional = (
        ("utilization_percent", _int_in(0, 100), "an integer from 0 to 100"),
        ("temperature_c", _int_in(cold, hot), f"an integer from {cold} to {hot}"),
        (
            "power_w",
            lambda v: _is_number(v) and math.isfinite(v) and v >= 0,
            "a non-negative number",
        ),
        (
            "pci_bus_id",
            lambda v: isinstance(v, str) and len(v) <= top["pci_bus_id"],
            f"a string of at most {top['pci_bus_id']} characters",
        ),
    )
    return required, optional


def _compute_capability(value: object) -> tuple[int, int] | None:
    """``"8.6"``, ``8.6`` (YAML reads an unquoted 8.6 as a float) or ``[8, 6]``."""
    if isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_int, value)):
        major, minor = value
    elif isinstance(value, str | float) and not isinstance(value, bool):
        major_text, dot, minor_text = str(value).strip().partition(".")
        if not (dot and major_text.isdigit() and minor_text.isdigit()):
            return None
        major, minor = int(major_text), int(minor_text)
    else:
        return None
    if major < 0 or minor < 0:
        return None
    return major, minor


def _processes(value: object, where: str) -> tuple[tuple, tuple]:
    """(compute, graphics) as (pid, MiB) pairs from an entry's ``processes`` list."""
    if value is None:
        return (), ()
    if not isinstance(value, list):
        raise BackendError(f"{where}: processes must be a list of {{pid, used_mb}}, got {value!r}")
    lists: dict[str, list[tuple[int, int]]] = {"compute": [], "graphics": []}
    for position, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - set(PROCESS_KEYS):
            raise BackendError(
                f"{where}: process {position} must be a mapping of pid, used_mb and "
                f"optionally kind, got {item!r}"
            )
        pid, used, kind = item.get("pid"), item.get("used_mb"), item.get("kind", "compute")
        if not (_is_int(pid) and pid > 0):
            raise BackendError(f"{where}: process {position}: pid must be a positive integer")
        if not (_is_int(used) and used >= 0):
            raise BackendError(
                f"{where}: process {position}: used_mb must be a non-negative integer"
            )
        if kind not in lists:
            raise BackendError(f"{where}: process {position}: kind must be compute or graphics")
        lists[kind].append((pid, used))
    return tuple(lists["compute"]), tuple(lists["graphics"])


class SimulatedBackend(GpuBackend):
    """Reports the GPUs listed in ``settings.GPUCONFIG_SIMULATED_GPUS``.

    The setting is a path to a YAML file, or the YAML text itself when it is not the path of an
    existing file. The YAML is a list (empty means no GPUs) of entries with ``index, name, uuid,
    vram_total_mb, vram_used_mb, compute_capability`` and optionally ``utilization_percent,
    temperature_c, power_w, pci_bus_id, available, processes``; ``available: false`` reports
    the GPU as lost. ``processes`` lists what holds the GPU's memory, each ``{pid, used_mb}``
    and optionally ``kind`` (``compute``, the default, or ``graphics``), PIDs of this machine.
    The file is read on every scan, so editing it changes the next scan. Anything
    malformed raises ``BackendError`` naming the entry and the problem.
    """

    name = "simulated"

    def scan(self) -> list[GpuReading]:
        source = getattr(settings, SETTING, None)
        if source is None or (isinstance(source, str) and not source.strip()):
            raise BackendUnavailable(f"{SETTING} is not set")
        text, origin = self._load(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise BackendError(f"{origin} is not valid YAML: {error}") from error
        if data is None:
            data = []
        if isinstance(data, str) and origin == SETTING:
            raise BackendError(
                f"{SETTING} is neither an existing file nor a YAML list of GPUs: {data[:100]!r}"
            )
        if not isinstance(data, list):
            raise BackendError(
                f"{origin} must be a YAML list of GPUs, not {type(data).__name__}: "
                f"{str(data)[:100]!r}"
            )
        readings = [self._reading(entry, position, origin) for position, entry in enumerate(data)]
        self._check_unique(readings, origin)
        return sorted(readings, key=lambda reading: reading.index)

    @staticmethod
    def _load(source: str | os.PathLike) -> tuple[str, str]:
        if isinstance(source, os.PathLike):
            path = Path(source)
        else:
            candidate = source.strip()
            looks_like_path = "\n" not in candidate and candidate.endswith((".yml", ".yaml"))
            path = Path(candidate) if looks_like_path or os.path.isfile(candidate) else None
        if path is None:
            return str(source), SETTING
        try:
            return path.read_text(encoding="utf-8"), f"{SETTING} file {path}"
        except OSError as error:
            raise BackendError(f"{SETTING} file {path} cannot be read: {error}") from error

    @staticmethod
    def _reading(entry: object, position: int, origin: str) -> GpuReading:
        where = f"{origin}, entry {position}"
        if not isinstance(entry, dict):
            raise BackendError(f"{where}: expected a mapping of GPU fields, got {entry!r}")
        if "index" in entry:
            where += f" (index {entry['index']!r})"
        _check_keys(entry, where)

        def problem(key: str, expected: str) -> BackendError:
            return BackendError(f"{where}: {key} must be {expected}, got {entry[key]!r}")

        required_rules, optional_rules = _rules()
        for key, valid, expected in required_rules:
            if not valid(entry[key]):
                raise problem(key, expected)
        if entry["vram_used_mb"] > entry["vram_total_mb"]:
            raise problem("vram_used_mb", f"at most vram_total_mb ({entry['vram_total_mb']})")
        capability = _compute_capability(entry["compute_capability"])
        part_max = _limits()["compute_capability"][1]
        if capability is None or max(capability) > part_max:
            raise problem("compute_capability", f'like "8.6" or [8, 6], parts at most {part_max}')
        for key, valid, expected in optional_rules:
            if entry.get(key) is not None and not valid(entry[key]):
                raise problem(key, expected)
        available = entry.get("available", True)
        if not isinstance(available, bool):
            raise problem("available", "true or false")
        power = entry.get("power_w")
        compute, graphics = _processes(entry.get("processes"), where)

        return GpuReading(
            index=entry["index"],
            uuid=entry["uuid"].strip(),
            name=entry["name"].strip(),
            vram_total_mb=entry["vram_total_mb"],
            vram_used_mb=entry["vram_used_mb"],
            compute_capability=capability,
            utilization_percent=entry.get("utilization_percent"),
            temperature_c=entry.get("temperature_c"),
            power_w=float(power) if power is not None else None,
            pci_bus_id=entry.get("pci_bus_id"),
            lost=not available,
            processes=compute,
            graphics_processes=graphics,
            processes_used_mb=sum(used for _, used in compute) if compute else None,
        )

    @staticmethod
    def _check_unique(readings: list[GpuReading], origin: str) -> None:
        for attribute in ("index", "uuid"):
            seen: set[object] = set()
            for reading in readings:
                value = getattr(reading, attribute)
                if value in seen:
                    raise BackendError(f"{origin}: two GPUs have {attribute} {value!r}")
                seen.add(value)
