"""Reads of the fleet: the hosts and their derived state."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from fleet.models import Host
from gpus.models import Gpu


def default_host_name() -> str:
    """The host an endpoint answers for when none is named: ``GPUCONFIG_DEFAULT_HOST``, else
    this machine's own."""
    return settings.GPUCONFIG_DEFAULT_HOST or settings.GPUCONFIG_HOST_NAME


def host_list() -> list[dict]:
    """Every registered host with its state, for the API and the fleet overview.

    ``gpus``: the GPUs detected on this machine's own host; hosts whose scans do not reach the
    centre yet report None (unknown), never 0.
    """
    now = timezone.now()
    interval = settings.GPUCONFIG_HEARTBEAT_INTERVAL
    local = settings.GPUCONFIG_HOST_NAME
    local_gpus = Gpu.objects.count()
    return [
        {
            "name": host.name,
            "display_name": host.display_name or host.name,
            "state": host.state_at(now, interval).value,
            "last_heartbeat": host.last_heartbeat,
            "gpus": local_gpus if host.name == local else None,
            "agent_version": host.agent_version,
        }
        for host in Host.objects.all()
    ]
