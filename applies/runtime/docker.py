"""Applies room. The Docker Engine runtime: finds, inspects and recreates service containers via
the docker SDK."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from typing import Any

import docker
import docker.errors
import requests.exceptions

from .base import ALL_DEVICES, RuntimeUnavailable
from .engine import EngineRuntime
from .recreate import Engine, EngineLost, Listed, Seen, seen_from_inspect
from .spec import Replacement, gpu_change, gpus_used, with_budget

SDK_DEFAULT_HOST = "unix:///var/run/docker.sock"


CDI_DRIVER = "cdi"
CDI_GPU = "nvidia.com/gpu="


def _is_cdi_gpu_request(request: dict[str, Any]) -> bool:
    # Docker 25+ with CDI enabled turns `--device nvidia.com/gpu=N` into a device request of
    # the "cdi" driver naming the CDI devices.
    ids = request.get("DeviceIDs") or []
    return request.get("Driver") == CDI_DRIVER and any(str(i).startswith(CDI_GPU) for i in ids)


def _is_nvidia_request(request: dict[str, Any]) -> bool:
    # `docker run --gpus` leaves Driver empty and lets the engine pick the driver registered
    # for the "gpu" capability; compose writes driver: nvidia.
    driver = request.get("Driver") or ""
    if driver == "nvidia" or _is_cdi_gpu_request(request):
        return True
    if driver:
        return False
    return any("gpu" in caps or "nvidia" in caps for caps in (request.get("Capabilities") or []))


def device_ids_of(host_config: dict[str, Any]) -> tuple[str, ...]:
    """The GPUs a container's NVIDIA device request names, as the engine will expose them.

    ``Count=-1`` is every GPU (``("all",)``); ``Count=N`` is the first N GPUs, which is how the
    engine turns a count into NVIDIA_VISIBLE_DEVICES.
    """
    ids: list[str] = []
    for request in host_config.get("DeviceRequests") or []:
        if not _is_nvidia_request(request):
            continue
        if _is_cdi_gpu_request(request):
            ids.extend(str(i).removeprefix(CDI_GPU) for i in request["DeviceIDs"])
        elif request.get("DeviceIDs"):
            ids.extend(str(i) for i in request["DeviceIDs"])
        elif (request.get("Count") or 0) < 0:
            return (ALL_DEVICES,)
        else:
            ids.extend(str(i) for i in range(request.get("Count") or 0))
    return tuple(ids)


def with_devices(
    requests_: list[dict[str, Any]] | None, device_ids: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Device requests with the NVIDIA one replaced by ``device_ids`` (dropped when empty).

    Other drivers' requests, and the capabilities and options of the NVIDIA request, are kept.
    """
    kept = [dict(r) for r in requests_ or [] if not _is_nvidia_request(r)]
    template = next((r for r in requests_ or [] if _is_nvidia_request(r)), None)
    if not device_ids:
        return kept
    if template is not None and _is_cdi_gpu_request(template):
        # A CDI-pinned container stays CDI-pinned: nvidia.com/gpu=<id>, other CDI devices kept.
        others = [i for i in template["DeviceIDs"] if not str(i).startswith(CDI_GPU)]
        cdi = {**template, "DeviceIDs": [*others, *(f"{CDI_GPU}{i}" for i in device_ids)]}
        return [*kept, cdi]
    request: dict[str, Any] = {
        "Driver": "nvidia",
        "Capabilities": [["gpu"]],
        "Options": {},
    }
    if template is not None:
        request["Driver"] = template.get("Driver") or "nvidia"
        request["Capabilities"] = copy.deepcopy(template.get("Capabilities")) or [["gpu"]]
        request["Options"] = dict(template.get("Options") or {})
    if tuple(device_ids) == (ALL_DEVICES,):
        request["Count"] = -1
        request["DeviceIDs"] = None
    else:
        request["Count"] = 0
        request["DeviceIDs"] = [str(i) for i in device_ids]
    return [*kept, request]


def _bind_target(bind: str) -> str:
    parts = bind.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _link_for_create(link: str) -> str:
    # Inspect reports legacy links as "/target:/this/alias"; create takes "target:alias".
    target, _, alias = link.partition(":")
    return f"{target.lstrip('/')}:{alias.rsplit('/', 1)[-1]}" if alias else target.lstrip("/")


def replacement_spec(
    attrs: dict[str, Any], change: Replacement
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The create body for a copy of an inspected container, and the extra networks to connect.

    Everything is taken from the old container's own inspect data, so the copy keeps its image,
    command, entrypoint, environment, labels, mounts, networks and aliases, restart policy,
    healthcheck, resources, working dir and user; only the NVIDIA device request and
    ``VRAM_BUDGET_GB`` change. Anonymous volumes are re-attached by name, so their data stays.
    """
    old_id: str = attrs["Id"]
    config = copy.deepcopy(attrs["Config"])
    host_config = copy.deepcopy(attrs["HostConfig"])

    # The GPU is given the way the old container got it (device request, CUDA_VISIBLE_DEVICES
    # among the GPUs it is given, or the nvidia runtime's variable).
    gpu = gpu_change(
        device_ids_of(host_config),
        config.get("Env"),
        change.device_ids,
        runtime=host_config.get("Runtime"),
    )
    config["Env"] = with_budget(gpu.environment(config.get("Env")), change.budget_gb)
    if change.labels:
        config["Labels"] = {**(config.get("Labels") or {}), **change.labels}
    # An unset hostname defaults to the container's short id: let the new one get its own.
    if config.get("Hostname") == old_id[:12]:
        config.pop("Hostname")
    config["Image"] = config.get("Image") or attrs["Image"]

    if gpu.exposed is not None:
        host_config["DeviceRequests"] = with_devices(host_config.get("DeviceRequests"), gpu.exposed)
    if host_config.get("Links"):
        host_config["Links"] = [_link_for_create(link) for link in host_config["Links"]]

    # Anonymous volumes (declared by the image or the container, or a --mount without a
    # source) would come back empty: attach the old ones by name.
    volume_at = {
        m["Destination"]: m["Name"]
        for m in attrs.get("Mounts") or []
        if m.get("Type") == "volume" and m.get("Name")
    }
    for mount in host_config.get("Mounts") or []:
        if mount.get("Type") == "volume" and not mount.get("Source"):
            mount["Source"] = volume_at.get(mount.get("Target")) or mount.get("Source")
    covered = {_bind_target(b) for b in host_config.get("Binds") or []}
    covered |= {m.get("Target") for m in host_config.get("Mounts") or []}
    rw = {m["Destination"]: m.get("RW", True) for m in attrs.get("Mounts") or []}
    extra_binds = [
        f"{name}:{target}:{'rw' if rw[target] else 'ro'}"
        for target, name in volume_at.items()
        if target not in covered
    ]
    if extra_binds:
        host_config["Binds"] = [*(host_config.get("Binds") or []), *extra_binds]

    network_mode = host_config.get("NetworkMode") or "default"
    endpoints: dict[str, dict[str, Any]] = {}
    if network_mode not in ("none", "host") and not network_mode.startswith("container:"):
        for net_name, endpoint in (attrs.get("NetworkSettings", {}).get("Networks") or {}).items():
            aliases = [a for a in endpoint.get("Aliases") or [] if a != old_id[:12]]
            endpoints[net_name] = {
                "Aliases": aliases or None,
                "Links": endpoint.get("Links"),
                "IPAMConfig": endpoint.get("IPAMConfig"),
                "DriverOpts": endpoint.get("DriverOpts"),
            }
    primary = "bridge" if network_mode == "default" else network_mode
    # API 1.41 honours one endpoint at create; the others are connected before start.
    body = dict(config)
    body["HostConfig"] = host_config
    if primary in endpoints:
        body["NetworkingConfig"] = {"EndpointsConfig": {primary: endpoints.pop(primary)}}
    return body, list(endpoints.items())


@contextlib.contextmanager
def _calls() -> Iterator[None]:
    # The SDK raises requests' ConnectionError when the socket goes away mid-call.
    try:
        yield
    except requests.exceptions.ConnectionError as exc:
        raise EngineLost(str(exc)) from exc


class DockerEngine(Engine):
    """The shared recreate's engine calls, through the docker SDK's low-level client."""

    errors = (docker.errors.APIError, requests.exceptions.RequestException)

    def __init__(self, api: docker.APIClient) -> None:
        self.api = api

    def explain(self, exc: BaseException) -> str:
        if isinstance(exc, docker.errors.APIError) and exc.explanation:
            return str(exc.explanation)
        return str(exc)

    def list(self, *, labels: Sequence[str] = (), name: str | None = None) -> list[Listed]:
        filters: dict[str, Any] = {}
        if labels:
            filters["label"] = list(labels)
        if name:
            filters["name"] = name
        with _calls():
            listed = self.api.containers(all=True, filters=filters)
        return [
            Listed(c["Id"], c["Names"][0].lstrip("/"), c["State"] == "running", c["Labels"] or {})
            for c in listed
        ]

    def inspect(self, ref: str) -> Seen | None:
        try:
            with _calls():
                attrs = self.api.inspect_container(ref)
        except docker.errors.NotFound:
            return None
        host_config = attrs.get("HostConfig") or {}
        used = gpus_used(
            device_ids_of(host_config),
            (attrs.get("Config") or {}).get("Env"),
            runtime=host_config.get("Runtime"),
        )
        return seen_from_inspect(attrs, device_ids=used)

    def stop(self, seen: Seen) -> None:
        # The container's own stop timeout, passed explicitly so the HTTP timeout covers it.
        with _calls():
            self.api.stop(seen.id, timeout=seen.stop_timeout)

    def rename(self, container_id: str, name: str) -> None:
        with _calls():
            self.api.rename(container_id, name)

    def create_copy(self, old: Seen, *, name: str, change: Replacement) -> str:
        body, extra_networks = replacement_spec(old.attrs, change)
        with _calls():
            self._pin_image(body, old.attrs["Image"])
            new_id = self.api.create_container_from_config(body, name=name)["Id"]
            for net_name, endpoint in extra_networks:
                ipam = endpoint.get("IPAMConfig") or {}
                self.api.connect_container_to_network(
                    new_id,
                    net_name,
                    aliases=endpoint.get("Aliases"),
                    links=endpoint.get("Links"),
                    ipv4_address=ipam.get("IPv4Address") or None,
                    ipv6_address=ipam.get("IPv6Address") or None,
                    link_local_ips=ipam.get("LinkLocalIPs") or None,
                    driver_opt=endpoint.get("DriverOpts"),
                )
        return new_id

    def _pin_image(self, body: dict[str, Any], image_id: str) -> None:
        """Run the old container's exact image, by id if its tag has moved on since."""
        try:
            current = self.api.inspect_image(body["Image"])["Id"]
        except docker.errors.ImageNotFound:
            current = None
        if current != image_id:
            body["Image"] = image_id

    def start(self, container_id: str) -> None:
        with _calls():
            self.api.start(container_id)

    def logs(self, container_id: str, tail: int) -> str:
        with _calls():
            raw = self.api.logs(container_id, tail=tail)
        return raw.decode("utf-8", errors="replace")

    def remove(self, container_id: str, *, force: bool = False) -> None:
        try:
            with _calls():
                self.api.remove_container(container_id, force=force)
        except docker.errors.NotFound:
            pass

    # -- make-before-break moves (handover.py) ---------------------------------------------

    def network_problem(self, network: str) -> str:
        # Docker resolves aliases on user-defined networks only, never on the default bridge.
        if network in ("bridge", "host", "none"):
            return f"is on Docker's default {network} network, which has no aliases"
        return ""

    def connect(self, container_id: str, network: str, aliases: list[str]) -> None:
        with _calls():
            self.api.connect_container_to_network(container_id, network, aliases=aliases or None)

    def disconnect(self, container_id: str, network: str) -> None:
        with _calls():
            self.api.disconnect_container_from_network(container_id, network)


class DockerRuntime(EngineRuntime):
    """Docker Engine through the docker SDK; the engine is found as the SDK finds it (DOCKER_HOST)
    unless ``base_url`` names it.

    A client is opened per call (never at import), so the runtime can be built before the engine
    is up and used from several threads at once. The GPU is the NVIDIA device request
    (``DeviceRequests``); the recreate itself is the shared one (``recreate.py``).
    """

    name = "docker"
    label = "Docker"

    @property
    def where(self) -> str:
        if self.base_url:
            return self.base_url
        host = os.environ.get("DOCKER_HOST")
        return f"{host} (DOCKER_HOST)" if host else f"{SDK_DEFAULT_HOST} (DOCKER_HOST is unset)"

    def _unavailable(self, exc: BaseException) -> RuntimeUnavailable:
        host = self.base_url or os.environ.get("DOCKER_HOST") or SDK_DEFAULT_HOST
        if host.startswith("unix://") and not os.path.exists(host[len("unix://") :]):
            reason = f"no socket at {host[len('unix://') :]}"
        else:
            reason = str(exc)
        return RuntimeUnavailable(f"Docker engine not reachable at {self.where}: {reason}")

    @contextlib.contextmanager
    def connect(self) -> Iterator[DockerEngine]:
        try:
            if self.base_url:
                client = docker.DockerClient(base_url=self.base_url, version="auto")
            else:
                client = docker.from_env()
        except docker.errors.DockerException as exc:
            raise self._unavailable(exc) from exc
        try:
            yield DockerEngine(client.api)
        except (EngineLost, requests.exceptions.ConnectionError) as exc:
            raise self._unavailable(exc) from exc
        finally:
            client.close()
