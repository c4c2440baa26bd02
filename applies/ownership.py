"""Applies room. Which managed service a container that holds GPU memory belongs to.

The inventory (``gpus.attribution``) maps NVML's PIDs to container ids but knows nothing of
services or engines; this module answers for it (registered when the app is ready). A
container is a service's when it carries ``com.docker.compose.service=<service>`` (within
``GPUCONFIG_COMPOSE_PROJECT`` when set), when it is the container gpuconfig last recorded for
the service, or when it is named after the service, the same rule as ``ContainerRuntime``.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings

from applies.live import live_cached
from applies.runtime import get_runtime
from assignments.selectors import service_list
from gpus.attribution import ContainerOwner

logger = logging.getLogger(__name__)

SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"

# Container ids never change their labels and rarely their names: the engine is listed again
# only when a scan names a container not seen before.
_listed: dict = {}
_lock = threading.Lock()


def _listing(ids: set[str]) -> dict:

    with _lock:
        if ids - set(_listed):
            fresh = {c.id: c for c in get_runtime().containers()}
            _listed.clear()
            _listed.update(fresh)
        return {i: _listed[i] for i in ids if i in _listed}


def _recorded_ids() -> dict[str, str]:
    """Short container id -> service, as the last look at the engine recorded them."""

    snapshot = live_cached() or {}
    return {
        container["id"]: service
        for service, container in (snapshot.get("containers") or {}).items()
        if container and container.get("id")
    }


def service_of(
    *, name: str, labels: dict[str, str], container_id: str, services: set[str], recorded: dict
) -> str | None:
    """The managed service a container runs, or None (a container gpuconfig does not manage)."""
    project = getattr(settings, "GPUCONFIG_COMPOSE_PROJECT", None) or None
    labelled = labels.get(SERVICE_LABEL)
    in_project = not project or labels.get(PROJECT_LABEL) in (None, project)
    if labelled in services and (not project or labels.get(PROJECT_LABEL) == project):
        return labelled
    by_record = recorded.get(container_id[:12])
    if by_record in services:
        return by_record
    if name in services and in_project and not labelled:
        return name
    return None


def container_owners(ids: set[str]) -> dict[str, ContainerOwner]:
    """Name and managed service of each container id the engine lists (unknown ids are left
    out). Raises what the runtime raises when the engine cannot be reached."""

    found = _listing(ids)
    if not found:
        return {}
    services = set(service_list().values_list("name", flat=True))
    recorded = _recorded_ids()
    return {
        cid: ContainerOwner(
            name=c.name,
            service=service_of(
                name=c.name,
                labels=c.labels,
                container_id=cid,
                services=services,
                recorded=recorded,
            ),
        )
        for cid, c in found.items()
    }
