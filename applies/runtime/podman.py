"""Applies room. The Podman runtime: finds, inspects and recreates service containers through
Podman's own (libpod) API, with podman-py as the client.

GPUs are CDI devices, ``--device nvidia.com/gpu=<index or uuid>``. Podman's Docker-compatible API
drops Docker's ``DeviceRequests``, and its inspect never names a CDI device, so the devices a
container was created with are read from, in order: the ``gpuconfig.devices`` label gpuconfig
puts on its own copies, the ``--device`` flags of ``Config.CreateCommand`` (podman and
podman-compose record it), or, for anything else, the ``/dev/nvidia<N>`` nodes the CDI edits
added. The recreate itself is the shared one (``recreate.py``); only the engine calls and the
create body (libpod's SpecGenerator) are Podman's.

Podman without systemd never runs healthchecks by itself, so the wait for health runs the
container's healthcheck through ``GET /libpod/containers/{id}/healthcheck`` at its interval.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

import podman.api
import podman.errors
from podman import PodmanClient

from .base import ALL_DEVICES, RuntimeUnavailable
from .engine import EngineRuntime
from .recreate import Engine, EngineLost, Listed, Seen, seen_from_inspect
from .sockets import PODMAN, Candidate, podman_candidates, resolve
from .spec import GpuChange, Replacement, gpu_change, gpus_used, with_budget

GPU_KIND = "nvidia.com/gpu"
DEVICES_LABEL = "gpuconfig.devices"
VISIBLE_ENV = "NVIDIA_VISIBLE_DEVICES"
GPU_NODE = re.compile(r"^/dev/nvidia(?P<index>\d+)$")
DEFAULT_HEALTH_INTERVAL_NS = 30 * 10**9
STOP_HTTP_MARGIN = 30  # seconds the stop request may take beyond the container's stop timeout


# -- devices ------------------------------------------------------------------------------------


def _device_flags(command: Sequence[str]) -> list[str]:
    """The values of every ``--device`` flag in a podman create command line."""
    found: list[str] = []
    args = iter(command)
    for arg in args:
        if arg == "--device":
            value = next(args, None)
            if value is not None:
                found.append(value)
        elif arg.startswith("--device="):
            found.append(arg.partition("=")[2])
    return found


def created_devices(attrs: dict[str, Any]) -> list[str]:
    """The ``--device`` values a container was created with (CDI names and device paths)."""
    config = attrs.get("Config") or {}
    recorded = (config.get("Labels") or {}).get(DEVICES_LABEL)
    if recorded:
        with contextlib.suppress(ValueError, TypeError):
            return [str(d) for d in json.loads(recorded)]
    if config.get("CreateCommand"):
        return _device_flags(config["CreateCommand"])
    devices: list[str] = []
    for node in (attrs.get("HostConfig") or {}).get("Devices") or []:
        inside = node.get("PathInContainer") or ""
        gpu = GPU_NODE.match(inside)
        if gpu:
            devices.append(f"{GPU_KIND}={gpu['index']}")
        elif not inside.startswith("/dev/nvidia"):  # the CDI edits' control nodes come back
            host = node.get("PathOnHost") or inside
            devices.append(f"{host}:{inside}:{node.get('CgroupPermissions') or 'rwm'}")
    return devices


def _gpu_id(device: str) -> str | None:
    kind, sep, name = device.partition("=")
    return name if sep and kind == GPU_KIND else None


def device_ids_of(devices: Sequence[str]) -> tuple[str, ...]:
    """The GPU ids among CDI device names (``nvidia.com/gpu=all`` is every GPU)."""
    ids = [gpu for gpu in map(_gpu_id, devices) if gpu is not None]
    return (ALL_DEVICES,) if ALL_DEVICES in ids else tuple(ids)


def with_devices(devices: Sequence[str], device_ids: tuple[str, ...]) -> list[str]:
    """The devices with the GPUs replaced by ``device_ids``; other devices are kept."""
    kept = [d for d in devices if _gpu_id(d) is None]
    return [*kept, *(f"{GPU_KIND}={gpu}" for gpu in device_ids)]


# -- the create body ----------------------------------------------------------------------------


def _entrypoint(attrs: dict[str, Any]) -> list[str] | None:
    # Inspect joins the entrypoint into one string; Path + Args hold it unjoined, before Cmd.
    config = attrs["Config"]
    if not config.get("Entrypoint"):
        return None
    args = attrs.get("Args") or []
    return [attrs["Path"], *args[: len(args) - len(config.get("Cmd") or [])]]


def _environment(
    attrs: dict[str, Any], change: Replacement, had_gpu: bool, gpu: GpuChange | None = None
) -> dict[str, str]:
    env = list(attrs["Config"].get("Env") or [])
    if gpu is not None:
        env = gpu.environment(env)
    hostname = attrs["Config"].get("Hostname")
    if hostname == attrs["Id"][:12]:
        env = [e for e in env if e != f"HOSTNAME={hostname}"]
    if had_gpu:
        # The GPU's CDI edits set it (and override the container's own value): the new GPU's
        # edits set it again.
        env = [e for e in env if e.partition("=")[0] != VISIBLE_ENV]
    pairs = (entry.partition("=") for entry in with_budget(env, change.budget_gb))
    return {key: value for key, _, value in pairs}


def _storage(attrs: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Bind and tmpfs mounts, and named volumes, with their options."""
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    for m in attrs.get("Mounts") or []:
        options = [o for o in m.get("Options") or [] if o not in ("rbind", "bind")]
        options.append("rw" if m.get("RW", True) else "ro")
        if m.get("Type") == "volume" and m.get("Name"):
            volumes.append({"Name": m["Name"], "Dest": m["Destination"], "Options": options})
        elif m.get("Type") == "bind":
            if m.get("Propagation"):
                options.append(m["Propagation"])
            mounts.append(
                {
                    "type": "bind",
                    "source": m["Source"],
                    "destination": m["Destination"],
                    "options": ["rbind" if "rbind" in (m.get("Options") or []) else "bind"]
                    + options,
                }
            )
    taken = {m["destination"] for m in mounts} | {v["Dest"] for v in volumes}
    for target, raw in ((attrs.get("HostConfig") or {}).get("Tmpfs") or {}).items():
        if target not in taken:
            options = [o for o in (raw or "").split(",") if o]
            mounts.append(
                {"type": "tmpfs", "source": "tmpfs", "destination": target, "options": options}
            )
    return mounts, volumes


def _network(attrs: dict[str, Any]) -> dict[str, Any]:
    host = attrs.get("HostConfig") or {}
    mode = host.get("NetworkMode") or ""
    if mode.startswith("container:"):
        # In a pod that shares its network, the pod provides it.
        return {} if attrs.get("Pod") else {"netns": {"nsmode": "container", "value": mode[10:]}}
    if mode in ("none", "host", "slirp4netns", "pasta", "private"):
        return {"netns": {"nsmode": mode}}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    if not networks:
        return {}
    short_id = attrs["Id"][:12]
    return {
        "netns": {"nsmode": "bridge"},
        "Networks": {
            name: {"aliases": [a for a in endpoint.get("Aliases") or [] if a != short_id]}
            for name, endpoint in networks.items()
        },
    }


def _ports(host: dict[str, Any]) -> list[dict[str, Any]]:
    mappings = []
    for port, bindings in (host.get("PortBindings") or {}).items():
        number, _, protocol = port.partition("/")
        for binding in bindings or []:
            mappings.append(
                {
                    "container_port": int(number),
                    "host_port": int(binding.get("HostPort") or 0),
                    "host_ip": binding.get("HostIp") or "",
                    "protocol": protocol or "tcp",
                }
            )
    return mappings


def _resources(host: dict[str, Any]) -> dict[str, Any]:
    wanted = {
        "memory": {
            "limit": host.get("Memory"),
            "reservation": host.get("MemoryReservation"),
            "swap": host.get("MemorySwap"),
        },
        "cpu": {
            "shares": host.get("CpuShares"),
            "quota": host.get("CpuQuota"),
            "period": host.get("CpuPeriod"),
            "cpus": host.get("CpusetCpus"),
            "mems": host.get("CpusetMems"),
        },
        "pids": {"limit": host.get("PidsLimit")},
    }
    limits = {
        group: {key: value for key, value in values.items() if value}
        for group, values in wanted.items()
    }
    return {group: values for group, values in limits.items() if values}


def replacement_spec(attrs: dict[str, Any], change: Replacement, *, name: str) -> dict[str, Any]:
    """The libpod create body for a copy of an inspected container.

    The copy keeps the old one's image, command and entrypoint, environment, labels, mounts
    with their options, tmpfs, named volumes (their data stays), pod, networks and aliases,
    ports, restart policy, healthcheck, resources, other devices, user and working dir; only
    the GPU CDI devices and ``VRAM_BUDGET_GB`` change. The devices it was created with are
    recorded in the ``gpuconfig.devices`` label, since Podman's inspect never names them.
    """
    config = attrs["Config"]
    host = attrs.get("HostConfig") or {}
    old_devices = created_devices(attrs)
    # A container that selects with CUDA_VISIBLE_DEVICES keeps the GPUs it is given.
    gpu = gpu_change(device_ids_of(old_devices), config.get("Env"), change.device_ids, runtime=None)
    devices = old_devices if gpu.exposed is None else with_devices(old_devices, gpu.exposed)
    mounts, volumes = _storage(attrs)
    restart = (host.get("RestartPolicy") or {}).get("Name") or ""
    spec: dict[str, Any] = {
        "name": name,
        "image": attrs.get("ImageName") or config.get("Image") or attrs["Image"],
        "command": config.get("Cmd") or None,
        "entrypoint": _entrypoint(attrs),
        "env": _environment(attrs, change, had_gpu=bool(device_ids_of(old_devices)), gpu=gpu),
        "labels": {
            **(config.get("Labels") or {}),
            **change.labels,
            DEVICES_LABEL: json.dumps(devices),
        },
        "devices": [{"path": device} for device in devices],
        "mounts": mounts,
        "volumes": volumes,
        "portmappings": _ports(host),
        "resource_limits": _resources(host) or None,
        "healthconfig": config.get("Healthcheck") if config.get("Healthcheck") else None,
        "restart_policy": restart if restart not in ("", "no") else None,
        "restart_tries": (host.get("RestartPolicy") or {}).get("MaximumRetryCount") or None,
        "pod": attrs.get("Pod") or None,
        "work_dir": config.get("WorkingDir") or None,
        "user": config.get("User") or None,
        "hostname": None if config.get("Hostname") == attrs["Id"][:12] else config.get("Hostname"),
        "stop_timeout": config.get("StopTimeout") or None,
        "stop_signal": config.get("StopSignal") or None,
        "terminal": bool(config.get("Tty")),
        "stdin": bool(config.get("OpenStdin")),
        "cap_add": host.get("CapAdd") or None,
        "cap_drop": host.get("CapDrop") or None,
        "privileged": bool(host.get("Privileged")),
        "read_only_filesystem": bool(host.get("ReadonlyRootfs")),
        "shm_size": host.get("ShmSize") or None,
        "dns_server": host.get("Dns") or None,
        "dns_search": host.get("DnsSearch") or None,
        "dns_option": host.get("DnsOptions") or None,
        "hostadd": host.get("ExtraHosts") or None,
        "groups": host.get("GroupAdd") or None,
        "selinux_opts": [
            o.partition("=")[2] for o in host.get("SecurityOpt") or [] if o.startswith("label=")
        ]
        or None,
        **_network(attrs),
    }
    return {key: value for key, value in spec.items() if value is not None}


# -- engine calls -------------------------------------------------------------------------------


def _checked(response: podman.api.APIResponse) -> podman.api.APIResponse:
    response.raise_for_status()
    return response


class PodmanEngine(Engine):
    """The shared recreate's engine calls, through podman-py's client for the libpod API."""

    errors = (podman.errors.APIError,)

    def __init__(self, api: podman.api.APIClient) -> None:
        self.api = api
        self._next_check: dict[str, float] = {}

    def explain(self, exc: BaseException) -> str:
        if isinstance(exc, podman.errors.APIError) and exc.explanation:
            return str(exc.explanation)
        return str(exc)

    def _call(self, method: str, path: str, **kwargs: Any) -> podman.api.APIResponse:
        try:
            return _checked(getattr(self.api, method)(path, **kwargs))
        except podman.errors.APIError as exc:
            # The client wraps a failed connection in APIError, with the OSError as its cause.
            if isinstance(exc.__cause__, OSError):
                raise EngineLost(str(exc.__cause__)) from exc
            raise

    def list(self, *, labels: Sequence[str] = (), name: str | None = None) -> list[Listed]:
        filters: dict[str, list[str]] = {}
        if labels:
            filters["label"] = list(labels)
        if name:
            filters["name"] = [name]
        params = {"all": True, "filters": json.dumps(filters)}
        listed = self._call("get", "/containers/json", params=params).json() or []
        return [
            Listed(c["Id"], c["Names"][0], c["State"] == "running", c.get("Labels") or {})
            for c in listed
        ]

    def inspect(self, ref: str) -> Seen | None:
        try:
            attrs = self._call("get", f"/containers/{ref}/json").json()
        except podman.errors.NotFound:
            return None
        used = gpus_used(
            device_ids_of(created_devices(attrs)), (attrs.get("Config") or {}).get("Env")
        )
        return seen_from_inspect(attrs, device_ids=used)

    def stop(self, seen: Seen) -> None:
        self._call(
            "post",
            f"/containers/{seen.id}/stop",
            params={"timeout": seen.stop_timeout},
            timeout=seen.stop_timeout + STOP_HTTP_MARGIN,
        )

    def rename(self, container_id: str, name: str) -> None:
        self._call("post", f"/containers/{container_id}/rename", params={"name": name})

    def create_copy(self, old: Seen, *, name: str, change: Replacement) -> str:
        body = replacement_spec(old.attrs, change, name=name)
        self._pin_image(body, old.attrs["Image"])
        created = self._call(
            "post",
            "/containers/create",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        return created.json()["Id"]

    def _pin_image(self, body: dict[str, Any], image_id: str) -> None:
        """Run the old container's exact image, by id if its name has moved on since."""
        try:
            current = self._call("get", f"/images/{body['image']}/json").json().get("Id")
        except podman.errors.NotFound:
            current = None
        if current != image_id:
            body["image"] = image_id

    def start(self, container_id: str) -> None:
        self._call("post", f"/containers/{container_id}/start")

    def check_health(self, seen: Seen) -> Seen:
        """Run the healthcheck once per its interval (the first one an interval after the wait
        began, as an engine that runs them would)."""
        check = (seen.attrs.get("Config") or {}).get("Healthcheck") or {}
        interval = (check.get("Interval") or DEFAULT_HEALTH_INTERVAL_NS) / 1e9
        now = time.monotonic()
        due = self._next_check.setdefault(seen.id, now + interval)
        if now < due:
            return seen
        self._next_check[seen.id] = now + interval
        self._call("get", f"/containers/{seen.id}/healthcheck")
        return self.inspect(seen.id) or seen

    def logs(self, container_id: str, tail: int) -> str:
        params = {"stdout": True, "stderr": True, "tail": tail}
        response = self._call("get", f"/containers/{container_id}/logs", params=params)
        return b"".join(podman.api.frames(response)).decode("utf-8", errors="replace")

    def remove(self, container_id: str, *, force: bool = False) -> None:
        try:
            self._call("delete", f"/containers/{container_id}", params={"force": force})
        except podman.errors.NotFound:
            pass

    # -- make-before-break moves (handover.py) ---------------------------------------------

    def network_problem(self, network: str) -> str:
        """A copy can take over an alias only where the network resolves names (netavark with
        aardvark-dns, or CNI with the dnsname plugin)."""
        try:
            info = self._call("get", f"/networks/{network}/json").json()
        except podman.errors.NotFound:
            return f"its network {network} is gone"
        if not info.get("dns_enabled"):
            return f"its Podman network {network} has no DNS, so its alias cannot move"
        return ""

    def connect(self, container_id: str, network: str, aliases: list[str]) -> None:
        body = {"container": container_id, "aliases": list(aliases)}
        self._call(
            "post",
            f"/networks/{network}/connect",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )

    def disconnect(self, container_id: str, network: str) -> None:
        self._call(
            "post",
            f"/networks/{network}/disconnect",
            data=json.dumps({"Container": container_id}),
            headers={"Content-Type": "application/json"},
        )


class PodmanRuntime(EngineRuntime):
    """Podman through its libpod API (podman-py), rootful or rootless, over ``unix://`` or
    ``tcp://``.

    The socket is ``base_url`` when given, else the first of ``CONTAINER_HOST``,
    ``DOCKER_HOST``, ``$XDG_RUNTIME_DIR/podman/podman.sock`` and ``/run/podman/podman.sock``
    where Podman answers (``sockets.py``); found once per runtime object, at its first call.
    """

    name = PODMAN
    label = "Podman"

    _found: Candidate | None = None

    @property
    def where(self) -> str:
        if self.base_url:
            return self.base_url
        return str(self._found) if self._found else ""

    def _url(self) -> str:
        if self.base_url:
            return self.base_url
        if self._found is None:
            self._found, _ = resolve(podman_candidates(), want=PODMAN, setting=PODMAN)
        return self._found.url

    @contextlib.contextmanager
    def connect(self) -> Iterator[PodmanEngine]:
        url = self._url()
        try:
            client = PodmanClient(base_url=url)
        except (ValueError, podman.errors.PodmanError) as exc:
            raise RuntimeUnavailable(f"Podman not reachable at {url}: {exc}") from exc
        try:
            yield PodmanEngine(client.api)
        except EngineLost as exc:
            raise RuntimeUnavailable(f"Podman not reachable at {url}: {exc}") from exc
        finally:
            client.close()
