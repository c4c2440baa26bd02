"""The Docker Engine runtime: finds, inspects and recreates service containers via the docker SDK."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docker
import docker.errors
import requests.exceptions

from assignments.planner.types import format_budget_gb

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

logger = logging.getLogger(__name__)

SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"
BUDGET_ENV = "VRAM_BUDGET_GB"
ALL_DEVICES = "all"

# An old container waiting for its replacement to prove healthy is renamed to
# "<name>-gpuconfig-old-<first 12 hex digits of its id>". Labels cannot be changed on an existing
# container, so this name is the only mark recover() has to find it after an interrupted apply.
ASIDE_MARK = "-gpuconfig-old-"
ASIDE_NAME = re.compile(r"^(?P<name>.+)" + re.escape(ASIDE_MARK) + r"(?P<short_id>[0-9a-f]{12})$")

LOG_TAIL_LINES = 20
POLL_INTERVAL = 0.2
DEFAULT_STOP_TIMEOUT = 10
SDK_DEFAULT_HOST = "unix:///var/run/docker.sock"


def aside_name(name: str, container_id: str) -> str:
    """The name an old container carries while its replacement is being started."""
    return f"{name}{ASIDE_MARK}{container_id[:12]}"


def _is_nvidia_request(request: dict[str, Any]) -> bool:
    # `docker run --gpus` leaves Driver empty and lets the engine pick the driver registered
    # for the "gpu" capability; compose writes driver: nvidia.
    driver = request.get("Driver") or ""
    if driver == "nvidia":
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
        if request.get("DeviceIDs"):
            ids.extend(str(i) for i in request["DeviceIDs"])
        elif (request.get("Count") or 0) < 0:
            return (ALL_DEVICES,)
        else:
            ids.extend(str(i) for i in range(request.get("Count") or 0))
    return tuple(ids)


def budget_of(env: list[str] | None) -> float | None:
    """``VRAM_BUDGET_GB`` from a container environment; None when unset or not a number."""
    value = None
    for entry in env or []:
        key, sep, raw = entry.partition("=")
        if sep and key == BUDGET_ENV:
            value = raw
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def with_budget(env: list[str] | None, budget_gb: float | None) -> list[str]:
    """The environment with ``VRAM_BUDGET_GB`` set to ``budget_gb`` (removed when None), in place."""
    result: list[str] = []
    placed = False
    for entry in env or []:
        if entry.partition("=")[0] == BUDGET_ENV:
            if budget_gb is not None and not placed:
                result.append(f"{BUDGET_ENV}={format_budget_gb(budget_gb)}")
                placed = True
            continue
        result.append(entry)
    if budget_gb is not None and not placed:
        result.append(f"{BUDGET_ENV}={format_budget_gb(budget_gb)}")
    return result


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


def _replica_number(labels: dict[str, str]) -> int:
    number = labels.get("com.docker.compose.container-number", "1")
    return int(number) if number.isdigit() else 1


def _bind_target(bind: str) -> str:
    parts = bind.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _link_for_create(link: str) -> str:
    # Inspect reports legacy links as "/target:/this/alias"; create takes "target:alias".
    target, _, alias = link.partition(":")
    return f"{target.lstrip('/')}:{alias.rsplit('/', 1)[-1]}" if alias else target.lstrip("/")


def replacement_spec(
    attrs: dict[str, Any],
    *,
    device_ids: tuple[str, ...],
    budget_gb: float | None,
    labels: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The create body for a copy of an inspected container, and the extra networks to connect.

    Everything is taken from the old container's own inspect data, so the copy keeps its image,
    command, entrypoint, environment, labels, mounts, networks and aliases, restart policy,
    healthcheck, resources, working dir and user; only the NVIDIA device request and
    ``VRAM_BUDGET_GB`` change, and ``labels`` are set over the old ones (the compose tool's
    config hash of the new files). Anonymous volumes are re-attached by name, so their data stays.
    """
    old_id: str = attrs["Id"]
    config = copy.deepcopy(attrs["Config"])
    host_config = copy.deepcopy(attrs["HostConfig"])

    config["Env"] = with_budget(config.get("Env"), budget_gb)
    if labels:
        config["Labels"] = {**(config.get("Labels") or {}), **labels}
    # An unset hostname defaults to the container's short id: let the new one get its own.
    if config.get("Hostname") == old_id[:12]:
        config.pop("Hostname")
    config["Image"] = config.get("Image") or attrs["Image"]

    host_config["DeviceRequests"] = with_devices(host_config.get("DeviceRequests"), device_ids)
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


class DockerRuntime(ContainerRuntime):
    """Docker Engine through the docker SDK; the engine is found as the SDK finds it (DOCKER_HOST).

    A client is opened per call (never at import), so the runtime can be built before the engine
    is up and used from several threads at once.

    recreate: stop the old container → rename it aside (``<name>-gpuconfig-old-<short id>``) →
    ``before_start()`` → create the copy under the original name → start it → wait for
    ``healthy`` (or ``health_grace`` seconds of running when the image has no healthcheck;
    ``unhealthy`` or an exit fails at once) → remove the old one. On any failure the copy is
    removed and the old container is renamed back and started again: ``rolled_back``, with the
    reason and the copy's last log lines; ``failed`` if even that restore did not work.
    """

    name = "docker"

    def __init__(
        self,
        *,
        project: str | None = None,
        health_timeout: float = 180.0,
        health_grace: float = 3.0,
        base_url: str | None = None,
    ) -> None:
        super().__init__(project=project, health_timeout=health_timeout, health_grace=health_grace)
        self.base_url = base_url

    # -- engine access -------------------------------------------------------------------------

    def _where(self) -> str:
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
        return RuntimeUnavailable(f"Docker engine not reachable at {self._where()}: {reason}")

    @contextlib.contextmanager
    def _client(self) -> Iterator[docker.DockerClient]:
        try:
            if self.base_url:
                client = docker.DockerClient(base_url=self.base_url, version="auto")
            else:
                client = docker.from_env()
        except docker.errors.DockerException as exc:
            raise self._unavailable(exc) from exc
        try:
            yield client
        except requests.exceptions.ConnectionError as exc:
            raise self._unavailable(exc) from exc
        finally:
            client.close()

    # -- finding containers --------------------------------------------------------------------

    def _label_filters(self, *labels: str) -> dict[str, list[str]]:
        wanted = list(labels)
        if self.project:
            wanted.append(f"{PROJECT_LABEL}={self.project}")
        return {"label": wanted} if wanted else {}

    def _find(self, api: docker.APIClient, service: str) -> dict[str, Any] | None:
        """The inspect data of a service's container, or None."""
        listed = [
            c
            for c in api.containers(
                all=True, filters=self._label_filters(f"{SERVICE_LABEL}={service}")
            )
            if not ASIDE_NAME.match(c["Names"][0].lstrip("/"))
        ]
        if listed:
            # One container per service; a scaled one is managed through its first replica.
            listed.sort(
                key=lambda c: (
                    c["State"] != "running",
                    _replica_number(c.get("Labels") or {}),
                    c["Names"][0],
                )
            )
            return api.inspect_container(listed[0]["Id"])
        by_name = self._by_name(api, service)
        if by_name is None:
            return None
        project = (by_name["Config"].get("Labels") or {}).get(PROJECT_LABEL)
        if self.project and project and project != self.project:
            return None
        return by_name

    @staticmethod
    def _by_name(api: docker.APIClient, name: str) -> dict[str, Any] | None:
        matches = api.containers(all=True, filters={"name": f"^/{re.escape(name)}$"})
        if not matches:
            return None
        try:
            return api.inspect_container(matches[0]["Id"])
        except docker.errors.NotFound:
            return None

    @staticmethod
    def _state(attrs: dict[str, Any]) -> ContainerState:
        state = attrs.get("State") or {}
        return ContainerState(
            id=attrs["Id"],
            name=attrs["Name"].lstrip("/"),
            status=state.get("Status", "unknown"),
            health=(state.get("Health") or {}).get("Status"),
            device_ids=device_ids_of(attrs.get("HostConfig") or {}),
            budget_gb=budget_of((attrs.get("Config") or {}).get("Env")),
        )

    # -- the contract --------------------------------------------------------------------------

    def inspect(self, service: str) -> ContainerState | None:
        with self._client() as client:
            try:
                attrs = self._find(client.api, service)
            except docker.errors.APIError as exc:
                raise RuntimeError_(f"cannot inspect the container of {service}: {exc}") from exc
            return self._state(attrs) if attrs else None

    def stop(self, service: str) -> None:
        with self._client() as client:
            try:
                attrs = self._find(client.api, service)
                if attrs is not None:
                    self._stop(client.api, attrs)
            except docker.errors.APIError as exc:
                raise RuntimeError_(f"cannot stop the container of {service}: {exc}") from exc

    @staticmethod
    def _stop(api: docker.APIClient, attrs: dict[str, Any]) -> None:
        # Pass the container's own stop timeout explicitly so the HTTP timeout covers it.
        timeout = attrs["Config"].get("StopTimeout") or DEFAULT_STOP_TIMEOUT
        api.stop(attrs["Id"], timeout=timeout)

    def recreate(
        self,
        service: str,
        *,
        device_ids: tuple[str, ...],
        budget_gb: float | None,
        progress: Progress,
        before_start: Callable[[], None] | None = None,
        health_timeout: float | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> RecreateResult:
        timeout = self.health_timeout if health_timeout is None else health_timeout
        with self._client() as client:
            try:
                old = self._find(client.api, service)
            except docker.errors.APIError as exc:
                message = f"cannot look up the container of {service}: {exc}"
                _emit(progress, Step.FAILED, message)
                return RecreateResult(Outcome.FAILED, message)
            if old is None:
                message = f"no container found for service {service}"
                _emit(progress, Step.FAILED, message)
                return RecreateResult(Outcome.FAILED, message)
            return _Recreate(
                api=client.api,
                old=old,
                device_ids=tuple(device_ids),
                budget_gb=budget_gb,
                progress=progress,
                before_start=before_start,
                health_timeout=timeout,
                health_grace=self.health_grace,
                labels=labels,
            ).run()

    def recover(self) -> list[str]:
        restored: list[str] = []
        with self._client() as client:
            api = client.api
            filters: dict[str, Any] = {"name": ASIDE_MARK}
            filters.update(self._label_filters())
            for listed in api.containers(all=True, filters=filters):
                aside = listed["Names"][0].lstrip("/")
                match = ASIDE_NAME.match(aside)
                if not match:
                    continue
                original = match["name"]
                labels = listed.get("Labels") or {}
                try:
                    if self._recover_one(api, listed["Id"], aside, original):
                        restored.append(labels.get(SERVICE_LABEL) or original)
                except docker.errors.APIError as exc:
                    logger.error("could not recover %s as %s: %s", aside, original, exc)
        return restored

    @staticmethod
    def _recover_one(api: docker.APIClient, aside_id: str, aside: str, original: str) -> bool:
        """Put an aside container back under its name unless its replacement proved healthy."""
        current = DockerRuntime._by_name(api, original)
        if current is not None:
            state = current.get("State") or {}
            health = (state.get("Health") or {}).get("Status")
            if state.get("Status") == "running" and health in (None, "healthy"):
                # The interrupted apply got as far as a working replacement: finish it.
                logger.warning(
                    "removing %s: %s already runs a healthy replacement", aside, original
                )
                api.remove_container(aside_id)
                return False
            logger.warning(
                "removing the unfinished replacement %s (%s)", original, current["Id"][:12]
            )
            api.remove_container(current["Id"], force=True)
        logger.warning("restoring %s as %s", aside, original)
        api.rename(aside_id, original)
        api.start(aside_id)
        return True


def _emit(progress: Progress, step: Step, message: str) -> None:
    # A progress sink that fails (say, Redis is down) must not leave a recreate half done.
    try:
        progress(step, message)
    except Exception:
        logger.exception("progress callback failed at %s", step)


class _Failure(Exception):
    """A step of a recreate failed; the message is the reason shown to the user."""


class _Recreate:
    """One recreate of one container, with what it has done so far for the rollback to undo."""

    def __init__(
        self,
        *,
        api: docker.APIClient,
        old: dict[str, Any],
        device_ids: tuple[str, ...],
        budget_gb: float | None,
        progress: Progress,
        before_start: Callable[[], None] | None,
        health_timeout: float,
        health_grace: float,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.labels = labels
        self.api = api
        self.old = old
        self.name: str = old["Name"].lstrip("/")
        self.device_ids = device_ids
        self.budget_gb = budget_gb
        self.progress = progress
        self.before_start = before_start
        self.health_timeout = health_timeout
        self.health_grace = health_grace
        self.was_running = bool((old.get("State") or {}).get("Running"))
        self.renamed = False
        self.new_id: str | None = None

    def _describe_target(self) -> str:
        gpus = ",".join(self.device_ids) if self.device_ids else "none"
        budget = (
            f"{BUDGET_ENV}={format_budget_gb(self.budget_gb)}"
            if self.budget_gb is not None
            else f"no {BUDGET_ENV}"
        )
        return f"GPU {gpus}, {budget}"

    def run(self) -> RecreateResult:
        try:
            self._replace()
        except _Failure as exc:
            return self._rollback(str(exc))
        except docker.errors.APIError as exc:
            return self._rollback(f"engine error: {exc.explanation or exc}")
        except requests.exceptions.RequestException as exc:
            return self._rollback(f"lost the engine: {exc}")
        except Exception as exc:  # anything else still has to be undone
            logger.exception("recreate of %s failed", self.name)
            return self._rollback(f"{type(exc).__name__}: {exc}")
        try:
            self.api.remove_container(self.old["Id"])
        except docker.errors.APIError as exc:
            # The new container runs and is healthy; a leftover stopped copy is only clutter.
            logger.warning("could not remove the old container %s: %s", self.old["Id"][:12], exc)
        message = f"{self.name} healthy on {self._describe_target()}"
        _emit(self.progress, Step.HEALTHY, message)
        return RecreateResult(Outcome.HEALTHY, message, container_id=self.new_id)

    def _replace(self) -> None:
        api, old = self.api, self.old
        _emit(self.progress, Step.STOPPING, f"stopping {self.name}")
        DockerRuntime._stop(api, old)
        api.rename(old["Id"], aside_name(self.name, old["Id"]))
        self.renamed = True

        if self.before_start is not None:
            try:
                self.before_start()
            except Exception as exc:  # its message is the reason to report
                raise _Failure(str(exc) or type(exc).__name__) from exc

        _emit(self.progress, Step.RECREATING, f"creating {self.name} on {self._describe_target()}")
        body, extra_networks = replacement_spec(
            old, device_ids=self.device_ids, budget_gb=self.budget_gb, labels=self.labels
        )
        self._pin_image(body)
        created = api.create_container_from_config(body, name=self.name)
        self.new_id = created["Id"]
        for net_name, endpoint in extra_networks:
            ipam = endpoint.get("IPAMConfig") or {}
            api.connect_container_to_network(
                self.new_id,
                net_name,
                aliases=endpoint.get("Aliases"),
                links=endpoint.get("Links"),
                ipv4_address=ipam.get("IPv4Address") or None,
                ipv6_address=ipam.get("IPv6Address") or None,
                link_local_ips=ipam.get("LinkLocalIPs") or None,
                driver_opt=endpoint.get("DriverOpts"),
            )

        _emit(self.progress, Step.STARTING, f"starting {self.name}")
        api.start(self.new_id)
        _emit(
            self.progress,
            Step.WAITING_HEALTH,
            f"waiting up to {self.health_timeout:g}s for {self.name} to become healthy",
        )
        self._wait_healthy()

    def _pin_image(self, body: dict[str, Any]) -> None:
        """Run the old container's exact image, by id if its tag has moved on since."""
        try:
            current = self.api.inspect_image(body["Image"])["Id"]
        except docker.errors.ImageNotFound:
            current = None
        if current != self.old["Image"]:
            body["Image"] = self.old["Image"]

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.health_timeout
        running_since: float | None = None
        while True:
            attrs = self.api.inspect_container(self.new_id)
            state = attrs["State"]
            status = state.get("Status")
            health = state.get("Health")
            now = time.monotonic()
            if status in ("exited", "dead"):
                raise _Failure(
                    f"the new container exited with code {state.get('ExitCode')}"
                    + (f" ({state['Error']})" if state.get("Error") else "")
                )
            # A restart policy hides a crash on start: count restarts as the failure they are.
            if status == "restarting" or attrs.get("RestartCount"):
                raise _Failure(
                    f"the new container crashed and was restarted by its restart policy "
                    f"(last exit code {state.get('ExitCode')})"
                )
            if health is not None:
                if health.get("Status") == "healthy":
                    return
                if health.get("Status") == "unhealthy":
                    log = health.get("Log") or []
                    detail = (log[-1].get("Output") or "").strip() if log else ""
                    raise _Failure(
                        "the new container is unhealthy"
                        + (f": healthcheck said {detail!r}" if detail else "")
                    )
            elif status == "running":
                running_since = running_since if running_since is not None else now
                if now - running_since >= self.health_grace:
                    return
            else:
                running_since = None
            if now >= deadline:
                shown = health.get("Status") if health is not None else status
                raise _Failure(
                    f"the new container did not become healthy within "
                    f"{self.health_timeout:g}s (still {shown})"
                )
            time.sleep(min(POLL_INTERVAL, max(deadline - now, 0.01)))

    def _log_tail(self) -> str:
        if self.new_id is None:
            return ""
        try:
            raw = self.api.logs(self.new_id, tail=LOG_TAIL_LINES)
        except docker.errors.APIError:
            return ""
        return raw.decode("utf-8", errors="replace").rstrip()

    def _rollback(self, reason: str) -> RecreateResult:
        api, old_id = self.api, self.old["Id"]
        tail = self._log_tail()
        problems: list[str] = []
        if self.new_id is not None:
            try:
                api.remove_container(self.new_id, force=True)
            except docker.errors.NotFound:
                pass
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                problems.append(f"could not remove the new container: {exc}")
        if self.renamed:
            try:
                api.rename(old_id, self.name)
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                problems.append(f"could not rename the old container back: {exc}")
        if self.was_running and not problems:
            try:
                api.start(old_id)
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                problems.append(f"could not start the old container again: {exc}")
        log_part = f"\nLast log lines of the new container:\n{tail}" if tail else ""
        if problems:
            message = f"{reason}; restoring {self.name} failed: {'; '.join(problems)}{log_part}"
            _emit(self.progress, Step.FAILED, message)
            return RecreateResult(Outcome.FAILED, message, container_id=old_id)
        message = f"{reason}. The previous {self.name} was restored.{log_part}"
        _emit(self.progress, Step.ROLLED_BACK, message)
        return RecreateResult(Outcome.ROLLED_BACK, message, container_id=old_id)
