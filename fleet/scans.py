"""The fleet's scans: a host's agent scans its own GPUs and reports; the centre takes them in.

- **Agent side** (``GPUCONFIG_ROLE=agent``, no database): every ``GPUCONFIG_SCAN_INTERVAL``
  seconds a thread of the agent's main process scans the local GPUs (``gpus.backends.scan``,
  processes attributed by ``gpus.services.processes_attribute``) and publishes the result as a
  ``ScanReport`` to the central exchange, stamped with the agent's broker user as heartbeats
  are. A ``fleet.scan`` task arriving on the host's queue (Detect / Re-scan for that host) makes
  one scan at once.
- **Central side**: ``fleet.scan_report`` (on the central queue) checks the report's shape here
  and its sender with ``fleet.identity.check_sender``, then takes it in for the host it names
  (``gpus.services.scan_report_ingest`` under ``host_scope``). A malformed report, one from a
  broker user that may not speak for the host it names, or one for an unregistered host is
  refused and logged, and nothing is written. Liveness stays on heartbeats alone.
- **Asking for a scan**: ``scan_request_send`` publishes ``fleet.scan`` to a host's queue; it
  is what ``gpus.tasks.gpu_scan_request`` calls for a host that is not this machine
  (registered in ``fleet.apps``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from celery import current_app, shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

from fleet.identity import BrokerIdentity, SenderRefused
from fleet.messages import MessageInvalid
from fleet.models import HOST_NAME_PATTERN
from fleet.routing import (
    CENTRAL_EXCHANGE,
    CENTRAL_ROUTING_KEY,
    HOSTS_EXCHANGE,
    SCAN_REPORT_TASK,
    SCAN_TASK,
)
from fleet.services import sender_host
from gpuconfig_site.hosts import host_name, host_scope
from gpuconfig_site.periodic import PeriodicThread
from gpus import backends
from gpus.attribution import COMPUTE, GRAPHICS, ProcessUse
from gpus.backends.base import BackendError, BackendUnavailable, GpuReading
from gpus.services import processes_attribute, scan_report_ingest

logger = logging.getLogger("gpuconfig.fleet")

_HOST_RE = re.compile(HOST_NAME_PATTERN)

# Bounds of one report: far above any real machine, low enough that one message cannot make
# the centre write without limit.
MAX_GPUS = 64
MAX_PROCESSES = 1024  # per GPU, per list
MAX_NOTES = 20
NOTE_CHARS = 500
ERROR_CHARS = 2000
BACKEND_CHARS = 32  # Gpu.backend
UUID_CHARS = 96  # Gpu.uuid
GPU_NAME_CHARS = 200  # Gpu.name
PCI_CHARS = 32  # Gpu.pci_bus_id
MAX_MB = 16 * 1024 * 1024  # 16 TiB of VRAM, in MiB
MAX_PID = 2**31 - 1

_READING_KEYS = {
    "index",
    "uuid",
    "name",
    "vram_total_mb",
    "vram_used_mb",
    "compute_capability",
    "utilization_percent",
    "temperature_c",
    "power_w",
    "pci_bus_id",
    "processes_used_mb",
    "lost",
    "processes",
    "graphics_processes",
}
_USE_KEYS = {
    "pid",
    "used_mb",
    "kind",
    "name",
    "container_id",
    "container_name",
    "service",
    "resolved",
}
_REPORT_KEYS = {"host", "backend", "readings", "notes", "error", "processes", "sent_at"}


# --- The message ------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: object, what: str, low: int, high: int, *, optional: bool = True) -> int | None:
    if value is None and optional:
        return None
    if not _is_int(value) or not low <= value <= high:
        raise MessageInvalid(f"{what} must be an integer from {low} to {high}, got {value!r}")
    return value


def _text(value: object, what: str, limit: int, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise MessageInvalid(f"{what} must be a string of at most {limit} characters")
    return value


def _list(value: object, what: str, limit: int) -> list:
    if not isinstance(value, list) or len(value) > limit:
        raise MessageInvalid(f"{what} must be a list of at most {limit} items")
    return value


def _pairs(value: object, what: str) -> tuple[tuple[int, int], ...]:
    """(pid, MiB) pairs, as NVML lists a GPU's processes."""
    out = []
    for position, item in enumerate(_list(value if value is not None else [], what, MAX_PROCESSES)):
        if not isinstance(item, list) or len(item) != 2:
            raise MessageInvalid(f"{what}[{position}] must be a [pid, used_mb] pair")
        pid = _int(item[0], f"{what}[{position}] pid", 1, MAX_PID, optional=False)
        used = _int(item[1], f"{what}[{position}] used_mb", 0, MAX_MB, optional=False)
        out.append((pid, used))
    return tuple(out)


def _reading(item: object, position: int) -> GpuReading:
    where = f"readings[{position}]"
    if not isinstance(item, dict) or set(item) - _READING_KEYS:
        raise MessageInvalid(f"{where} must be an object of {', '.join(sorted(_READING_KEYS))}")
    cc = item.get("compute_capability")
    if cc is not None:
        if not isinstance(cc, list) or len(cc) != 2:
            raise MessageInvalid(f"{where}.compute_capability must be [major, minor] or null")
        cc = (
            _int(cc[0], f"{where}.compute_capability major", 0, 99, optional=False),
            _int(cc[1], f"{where}.compute_capability minor", 0, 99, optional=False),
        )
    power = item.get("power_w")
    if power is not None and (
        isinstance(power, bool)
        or not isinstance(power, int | float)
        or not math.isfinite(power)
        or not 0 <= power <= 100_000
    ):
        raise MessageInvalid(f"{where}.power_w must be a number from 0 to 100000 or null")
    lost = item.get("lost", False)
    if not isinstance(lost, bool):
        raise MessageInvalid(f"{where}.lost must be true or false")
    uuid = _text(item.get("uuid"), f"{where}.uuid", UUID_CHARS)
    if not uuid:
        raise MessageInvalid(f"{where}.uuid must not be empty")
    return GpuReading(
        index=_int(item.get("index"), f"{where}.index", 0, 32767, optional=False),
        uuid=uuid,
        name=_text(item.get("name"), f"{where}.name", GPU_NAME_CHARS),
        vram_total_mb=_int(item.get("vram_total_mb"), f"{where}.vram_total_mb", 0, MAX_MB),
        vram_used_mb=_int(item.get("vram_used_mb"), f"{where}.vram_used_mb", 0, MAX_MB),
        compute_capability=cc,
        utilization_percent=_int(
            item.get("utilization_percent"), f"{where}.utilization_percent", 0, 100
        ),
        temperature_c=_int(item.get("temperature_c"), f"{where}.temperature_c", -100, 300),
        power_w=None if power is None else float(power),
        pci_bus_id=_text(item.get("pci_bus_id"), f"{where}.pci_bus_id", PCI_CHARS, optional=True),
        processes_used_mb=_int(
            item.get("processes_used_mb"), f"{where}.processes_used_mb", 0, MAX_MB
        ),
        lost=lost,
        processes=_pairs(item.get("processes"), f"{where}.processes"),
        graphics_processes=_pairs(item.get("graphics_processes"), f"{where}.graphics_processes"),
    )


def _use(item: object, uuid: str, where: str) -> ProcessUse:
    if not isinstance(item, dict) or set(item) - _USE_KEYS:
        raise MessageInvalid(f"{where} must be an object of {', '.join(sorted(_USE_KEYS))}")
    kind = item.get("kind", COMPUTE)
    if kind not in (COMPUTE, GRAPHICS):
        raise MessageInvalid(f"{where}.kind must be {COMPUTE} or {GRAPHICS}")
    resolved = item.get("resolved", True)
    if not isinstance(resolved, bool):
        raise MessageInvalid(f"{where}.resolved must be true or false")
    container_id = _text(item.get("container_id", ""), f"{where}.container_id", 64)
    if container_id and not re.fullmatch(r"[0-9a-f]{64}", container_id):
        raise MessageInvalid(f"{where}.container_id must be a container's 64 hex digits or empty")
    return ProcessUse(
        gpu_uuid=uuid,
        pid=_int(item.get("pid"), f"{where}.pid", 1, MAX_PID, optional=False),
        used_mb=_int(item.get("used_mb"), f"{where}.used_mb", 0, MAX_MB, optional=False),
        kind=kind,
        name=_text(item.get("name", ""), f"{where}.name", 64),
        container_id=container_id,
        container_name=_text(item.get("container_name", ""), f"{where}.container_name", 255),
        service=_text(item.get("service"), f"{where}.service", 64, optional=True) or None,
        resolved=resolved,
    )


def _processes(value: object, uuids: set[str]) -> dict[str, tuple[ProcessUse, ...]] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_GPUS:
        raise MessageInvalid(f"processes must be an object of at most {MAX_GPUS} GPU UUIDs")
    out = {}
    for uuid, uses in value.items():
        if uuid not in uuids:
            raise MessageInvalid(f"processes names GPU {str(uuid)[:UUID_CHARS]!r}, not in readings")
        where = f"processes[{uuid}]"
        out[uuid] = tuple(
            _use(item, uuid, f"{where}[{n}]")
            for n, item in enumerate(_list(uses, where, MAX_PROCESSES))
        )
    return out


def _reading_payload(reading: GpuReading) -> dict:
    cc = reading.compute_capability
    return {
        "index": reading.index,
        "uuid": reading.uuid,
        "name": reading.name,
        "vram_total_mb": reading.vram_total_mb,
        "vram_used_mb": reading.vram_used_mb,
        "compute_capability": None if cc is None else [cc[0], cc[1]],
        "utilization_percent": reading.utilization_percent,
        "temperature_c": reading.temperature_c,
        "power_w": reading.power_w,
        "pci_bus_id": reading.pci_bus_id,
        "processes_used_mb": reading.processes_used_mb,
        "lost": reading.lost,
        "processes": [[pid, used] for pid, used in reading.processes],
        "graphics_processes": [[pid, used] for pid, used in reading.graphics_processes],
    }


def _use_payload(use: ProcessUse) -> dict:
    return {
        "pid": use.pid,
        "used_mb": use.used_mb,
        "kind": use.kind,
        "name": use.name[:64],
        "container_id": use.container_id,
        "container_name": use.container_name[:255],
        "service": use.service,
        "resolved": use.resolved,
    }


@dataclass(frozen=True)
class ScanReport:
    """One scan a host's agent made of its own GPUs, as it travels to the centre.

    ``error`` is set (and ``readings`` empty) when the scan failed there: the centre then keeps
    the host's inventory as it was and reports why. ``processes`` are the readings' processes
    attributed on the host (by GPU UUID), or None when the agent sends none (the readings' PIDs
    are then kept unattributed).
    """

    host: str
    backend: str | None
    readings: tuple[GpuReading, ...]
    notes: tuple[str, ...]
    error: str | None
    processes: Mapping[str, Sequence[ProcessUse]] | None
    sent_at: datetime

    @classmethod
    def from_payload(cls, payload: dict) -> ScanReport:
        """The report ``payload`` holds; ``MessageInvalid`` naming the first thing wrong."""
        if not isinstance(payload, dict):
            raise MessageInvalid("a scan report is an object")
        if set(payload) - _REPORT_KEYS:
            unknown = ", ".join(sorted(str(k)[:40] for k in set(payload) - _REPORT_KEYS))
            raise MessageInvalid(f"a scan report holds no {unknown}")
        host = payload.get("host")
        if not isinstance(host, str) or not _HOST_RE.match(host):
            raise MessageInvalid(f"scan report host {str(host)[:70]!r} is not a host name")
        backend = _text(payload.get("backend"), "backend", BACKEND_CHARS, optional=True)
        readings = tuple(
            _reading(item, n)
            for n, item in enumerate(_list(payload.get("readings"), "readings", MAX_GPUS))
        )
        uuids = [r.uuid for r in readings]
        if len(set(uuids)) != len(uuids):
            raise MessageInvalid("readings name the same GPU UUID twice")
        notes = tuple(
            _text(note, f"notes[{n}]", NOTE_CHARS)
            for n, note in enumerate(_list(payload.get("notes", []), "notes", MAX_NOTES))
        )
        error = _text(payload.get("error"), "error", ERROR_CHARS, optional=True)
        if error is not None and readings:
            raise MessageInvalid("a failed scan (error) carries no readings")
        try:
            sent_at = datetime.fromisoformat(payload["sent_at"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageInvalid("sent_at must be an ISO 8601 time") from exc
        if sent_at.tzinfo is None:
            raise MessageInvalid("sent_at must carry its time zone")
        return cls(
            host=host,
            backend=backend or None,
            readings=readings,
            notes=notes,
            error=error,
            processes=_processes(payload.get("processes"), set(uuids)),
            sent_at=sent_at,
        )

    def as_payload(self) -> dict:
        return {
            "host": self.host,
            "backend": self.backend,
            "readings": [_reading_payload(r) for r in self.readings],
            "notes": list(self.notes),
            "error": self.error,
            "processes": None
            if self.processes is None
            else {uuid: [_use_payload(u) for u in uses] for uuid, uses in self.processes.items()},
            "sent_at": self.sent_at.astimezone(UTC).isoformat(),
        }


# --- Agent side ---------------------------------------------------------------------------------


def scan_report_make() -> ScanReport:
    """Scan this machine's GPUs now, as a report for the centre (a backend that cannot run or
    fails is reported as the scan's ``error``; the centre then keeps the host's inventory)."""
    host = settings.GPUCONFIG_HOST_NAME
    now = datetime.now(UTC)
    try:
        result = backends.scan()
    except (BackendUnavailable, BackendError) as exc:
        logger.error("GPU scan failed: %s", exc)
        return ScanReport(host, None, (), (), str(exc)[:ERROR_CHARS], None, now)
    readings = tuple(result.readings[:MAX_GPUS])
    processes = processes_attribute(readings)
    return ScanReport(
        host=host,
        backend=result.backend,
        readings=readings,
        notes=tuple(note[:NOTE_CHARS] for note in result.notes[:MAX_NOTES]),
        error=None,
        processes={uuid: tuple(uses[:MAX_PROCESSES]) for uuid, uses in processes.items()},
        sent_at=now,
    )


def scan_report_send(app, report: ScanReport | None = None) -> ScanReport:
    """Publish one scan report (a fresh scan unless given) to the central exchange, stamped
    with this agent's broker user as heartbeats are; returns it."""
    report = report or scan_report_make()
    identity = BrokerIdentity.from_url(app.conf.broker_url or "")
    options = {"user_id": identity.own_user} if identity.authenticates else {}
    app.send_task(
        SCAN_REPORT_TASK,
        args=[report.as_payload()],
        exchange=CENTRAL_EXCHANGE,
        routing_key=CENTRAL_ROUTING_KEY,
        declare=[],
        # A report older than two scan intervals has been overtaken by the next one.
        expires=max(settings.GPUCONFIG_SCAN_INTERVAL * 2, 10),
        **options,
    )
    return report


# A daemon thread of the agent's main process that scans and reports at once and then every
# ``GPUCONFIG_SCAN_INTERVAL`` seconds; a scan or publish that fails is logged and tried again at
# the next one.
ScanSender = PeriodicThread(
    "gpuconfig-host-scan",
    None,
    lambda: float(max(settings.GPUCONFIG_SCAN_INTERVAL, 1)),
    immediate=True,
)


@worker_ready.connect
def _start_agent_scans(sender=None, **_kwargs) -> None:
    if settings.GPUCONFIG_ROLE == "agent":
        app = getattr(sender, "app", None) or current_app
        ScanSender.start(lambda: scan_report_send(app))


@worker_shutdown.connect
def _stop_agent_scans(**_kwargs) -> None:
    ScanSender.stop()


@shared_task(name=SCAN_TASK, bind=True, ignore_result=True, acks_late=False)
def scan_task(self) -> None:
    """On the host's agent: scan now and report (the centre's Detect / Re-scan for this host)."""
    scan_report_send(self.app)


# --- Central side ------------------------------------------------------------------------------


def scan_request_send(*, wait: float) -> None:
    """Ask the host at hand's agent for a scan now: ``fleet.scan`` on its queue (through the
    hosts exchange, routed by the host's name). Expires when nobody could still wait for it."""
    current_app.send_task(
        SCAN_TASK,
        exchange=HOSTS_EXCHANGE,
        routing_key=host_name(),
        declare=[],
        expires=max(wait * 2, 10),
    )


def scan_report_receive(payload: dict, *, sender: str | None) -> dict | None:
    """Take in one scan report: refused (logged, nothing written) when malformed, when its
    host is not registered, or when its sender may not speak for the host it names; else the
    host's inventory is synced and its last scan kept. Returns the scan summary, or None."""
    try:
        report = ScanReport.from_payload(payload)
        host = sender_host(report.host, sender=sender)
    except (MessageInvalid, SenderRefused) as exc:
        claimed = payload.get("host", "") if isinstance(payload, dict) else ""
        logger.warning(
            "Scan report refused: %s",
            exc,
            extra={"sender": sender or "", "claimed_host": str(claimed)[:63]},
        )
        return None
    with host_scope(host.name):
        return scan_report_ingest(
            readings=list(report.readings),
            backend=report.backend or "",
            notes=report.notes,
            error=report.error,
            processes=report.processes,
        )


@shared_task(name=SCAN_REPORT_TASK, bind=True, ignore_result=True, acks_late=False)
def scan_report_task(self, payload: dict) -> None:
    scan_report_receive(payload, sender=(self.request.properties or {}).get("user_id"))
