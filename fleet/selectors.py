"""Reads of the fleet: the hosts and their derived state."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from applies.models import ApplyRun
from fleet.models import Host, HostState
from gpus.models import Gpu


def host_list() -> list[dict]:
    """Every registered host with its state, for the API and the fleet overview.

    ``gpus``: the GPUs the host's scans have found (kept while lost, as on a host's page).
    """
    now = timezone.now()
    interval = settings.GPUCONFIG_HEARTBEAT_INTERVAL
    counts = dict(Gpu.all_hosts.values("host").annotate(n=Count("pk")).values_list("host", "n"))
    return [
        {
            "name": host.name,
            "display_name": host.display_name or host.name,
            "state": host.state_at(now, interval).value,
            "last_heartbeat": host.last_heartbeat,
            "gpus": counts.get(host.name, 0),
            "agent_version": host.agent_version,
        }
        for host in Host.objects.all()
    ]


def host_for_request(name: str) -> Host | None:
    """The registered host named ``name``, or None (the request is a 404)."""
    return Host.objects.filter(name=name).first()


def host_state(host: Host) -> HostState:
    """``host``'s state now. This machine's own host is served by its own worker: it is
    online as that worker is, which ``/readyz`` reports, so it is never refused here."""
    if host.name == settings.GPUCONFIG_HOST_NAME:
        return HostState.ONLINE
    return host.state_at(timezone.now(), settings.GPUCONFIG_HEARTBEAT_INTERVAL)


def fleet_gpu_totals() -> dict[str, dict]:
    """Each host's GPUs in one grouped read, by host name: ``present`` and ``lost`` (kept
    while missing from scans), and the VRAM ``used_mb`` / ``total_mb`` of the present ones."""
    present = Q(available=True)
    rows = Gpu.all_hosts.values("host").annotate(
        present=Count("pk", filter=present),
        lost=Count("pk", filter=~present),
        used_mb=Sum("vram_used_mb", filter=present),
        total_mb=Sum("vram_total_mb", filter=present),
    )
    return {
        row["host"]: {
            "present": row["present"],
            "lost": row["lost"],
            "used_mb": row["used_mb"] or 0,
            "total_mb": row["total_mb"] or 0,
        }
        for row in rows.order_by()
    }


def fleet_last_applies() -> dict[str, ApplyRun]:
    """Each host's latest apply run (the newest requested), by host name: two reads for the
    whole fleet."""
    latest = ApplyRun.all_hosts.values("host").annotate(last=Max("pk")).order_by()
    ids = [row["last"] for row in latest]
    return {
        run.host: run
        for run in ApplyRun.all_hosts.filter(pk__in=ids).only(
            "pk", "host", "status", "created_at", "started_at", "finished_at"
        )
    }
