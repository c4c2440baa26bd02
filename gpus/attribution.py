"""Who holds a GPU's memory: each process NVML lists, mapped to its container and service.

NVML reports host PIDs. A PID is mapped to a container through ``<proc root>/<pid>/cgroup``
(cgroup v1 and v2, the Docker, Podman, containerd and Kubernetes path shapes) and named from
``<proc root>/<pid>/comm``. Which managed service a container belongs to is not known here
(this app imports nothing from assignments): the app that knows registers a resolver with
``container_resolver_register``, called with the container ids of one scan.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .backends.base import GpuReading

logger = logging.getLogger(__name__)

COMPUTE = "compute"
GRAPHICS = "graphics"

# One path component that names a container: a 64-hex id, bare (``/docker/<id>``,
# ``/kubepods/<qos>/pod<uid>/<id>``) or with the engine's prefix and systemd's ``.scope``
# (``docker-<id>.scope``, ``libpod-<id>.scope``, ``libpod-conmon-<id>.scope``,
# ``cri-containerd-<id>.scope``, ``crio-<id>.scope``).
_COMPONENT = re.compile(
    r"^(?P<prefix>docker-|libpod-conmon-|libpod-|cri-containerd-|crio-conmon-|crio-|"
    r"containerd-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)
_ENGINES = {
    "docker-": "docker",
    "libpod-": "podman",
    "libpod-conmon-": "podman",
    "cri-containerd-": "containerd",
    "containerd-": "containerd",
    "crio-": "cri-o",
    "crio-conmon-": "cri-o",
}


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A container named by a cgroup path: its full id and the engine the path shape says."""

    id: str
    engine: str


@dataclass(frozen=True, slots=True)
class ContainerOwner:
    """What the engine says of a container: its name, and the managed service it runs (None
    for a container gpuconfig does not manage)."""

    name: str
    service: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessUse:
    """One process holding memory on one GPU at one scan, attributed.

    ``resolved`` is False when ``/proc/<pid>`` could not be read (gpuconfig does not see the
    host's PIDs): ``name`` is then empty and the container unknown.
    """

    gpu_uuid: str
    pid: int
    used_mb: int
    kind: str = COMPUTE
    name: str = ""
    container_id: str = ""
    container_name: str = ""
    service: str | None = None
    resolved: bool = True


def container_of(cgroup_text: str) -> ContainerRef | None:
    """The container a ``/proc/<pid>/cgroup`` text places the process in, or None (a host
    process, or a shape that names no container).

    Every hierarchy line (v1 ``N:controllers:/path``, v2 ``0::/path``) is looked at; the last
    id-bearing component of a path wins, since nested cgroups put the container deepest.
    """
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        found = None
        for component in path.split("/"):
            match = _COMPONENT.match(component)
            if match:
                found = match
        if found is not None:
            prefix = found.group("prefix") or ""
            if prefix:
                engine = _ENGINES[prefix]
            elif "/kubepods" in path:
                engine = "kubernetes"
            elif "/docker/" in path:
                engine = "docker"
            else:
                engine = "unknown"
            return ContainerRef(found.group("id"), engine)
    return None


@dataclass(frozen=True, slots=True)
class _Seen:
    name: str
    container: ContainerRef | None
    resolved: bool


class ProcReader:
    """Reads ``comm`` and ``cgroup`` of host PIDs under a proc root, remembering what it read.

    A PID is read again only when its ``/proc/<pid>`` entry is a new one (another process got
    the PID): one ``stat`` per known process per scan instead of two file reads.
    """

    def __init__(self, root: str = "/proc") -> None:
        self.root = root
        self._known: dict[int, tuple[int, _Seen]] = {}

    def read(self, pid: int) -> _Seen:
        base = f"{self.root}/{pid}"
        try:
            stamp = os.stat(base).st_ctime_ns
        except OSError:
            self._known.pop(pid, None)
            return _Seen("", None, False)
        known = self._known.get(pid)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            with open(f"{base}/comm", encoding="utf-8", errors="replace") as handle:
                name = handle.read().strip()
            with open(f"{base}/cgroup", encoding="utf-8", errors="replace") as handle:
                container = container_of(handle.read())
        except OSError:
            return _Seen("", None, False)
        seen = _Seen(name, container, True)
        self._known[pid] = (stamp, seen)
        return seen

    def forget_except(self, pids: Iterable[int]) -> None:
        """Drop what was read of PIDs no longer on any GPU (bounded memory)."""
        keep = set(pids)
        for pid in [p for p in self._known if p not in keep]:
            del self._known[pid]


Resolver = Callable[[set[str]], Mapping[str, ContainerOwner]]
_resolver: Resolver | None = None
_readers: dict[str, ProcReader] = {}


def container_resolver_register(resolver: Resolver | None) -> None:
    """Set the function that names the containers of a scan: called with their full ids, it
    returns an owner per id it knows (unknown ids are left out). None removes it."""
    global _resolver
    _resolver = resolver


def container_resolver() -> Resolver | None:
    return _resolver


def proc_reader(root: str) -> ProcReader:
    """The reader kept for ``root`` in this process (its memory spans scans)."""
    reader = _readers.get(root)
    if reader is None:
        reader = _readers[root] = ProcReader(root)
    return reader


def _listed(reading: GpuReading) -> list[tuple[int, int, str]]:
    """(pid, MiB, kind) of a reading, a PID listed as compute and graphics counted once."""
    out: dict[int, tuple[int, int, str]] = {}
    for pid, used in reading.processes:
        out[pid] = (pid, used, COMPUTE)
    for pid, used in reading.graphics_processes:
        if pid in out:
            out[pid] = (pid, max(out[pid][1], used), COMPUTE)
        else:
            out[pid] = (pid, used, GRAPHICS)
    return list(out.values())


def processes_attribute(
    *,
    readings: Sequence[GpuReading],
    reader: ProcReader,
    resolve: Resolver | None = None,
) -> dict[str, list[ProcessUse]]:
    """Every process of every present GPU in ``readings``, attributed: by GPU UUID, in the
    order the backend listed them. ``resolve`` names the containers (one call for the scan);
    when it fails the processes keep their container ids, unnamed and unowned."""
    listed = {r.uuid: _listed(r) for r in readings if not r.lost}
    seen = {pid: reader.read(pid) for entries in listed.values() for pid, _, _ in entries}
    reader.forget_except(seen)
    ids = {s.container.id for s in seen.values() if s.container is not None}
    owners: Mapping[str, ContainerOwner] = {}
    if ids and resolve is not None:
        try:
            owners = resolve(ids)
        except Exception:  # an engine away must not cost the scan its readings
            logger.warning("Cannot name the containers of the GPU processes", exc_info=True)
    out: dict[str, list[ProcessUse]] = {}
    for uuid, entries in listed.items():
        uses = []
        for pid, used, kind in entries:
            info = seen[pid]
            container_id = info.container.id if info.container else ""
            owner = owners.get(container_id) if container_id else None
            uses.append(
                ProcessUse(
                    gpu_uuid=uuid,
                    pid=pid,
                    used_mb=used,
                    kind=kind,
                    name=info.name,
                    container_id=container_id,
                    container_name=owner.name if owner else "",
                    service=owner.service if owner else None,
                    resolved=info.resolved,
                )
            )
        out[uuid] = uses
    return out


def service_totals(processes: Mapping[str, Sequence[ProcessUse]]) -> dict[tuple[str, str], int]:
    """MiB per (service, GPU UUID): what each managed service holds on each GPU."""
    totals: dict[tuple[str, str], int] = {}
    for uuid, uses in processes.items():
        for use in uses:
            if use.service:
                key = (use.service, uuid)
                totals[key] = totals.get(key, 0) + use.used_mb
    return totals
