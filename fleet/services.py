"""Writes of the fleet: registering hosts and taking in what their agents report.

Only the central worker and the web process call these: they hold the database. Agents reach
them through the broker (``fleet.tasks``), checked by ``fleet.messages`` (shape) and
``fleet.identity`` (sender) first.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from fleet.agent import agent_version
from fleet.identity import BrokerIdentity, SenderRefused, check_sender
from fleet.messages import Heartbeat, MessageInvalid
from fleet.models import HOST_NAME_PATTERN, Host, HostState
from fleet.routing import broker_user_for
from fleet.selectors import host_state
from gpuconfig_site.errors import ApplicationError
from gpuconfig_site.hosts import host_name

logger = logging.getLogger("gpuconfig.fleet")


class HostInvalid(ApplicationError):
    """A host registration that cannot be made (bad name, taken name)."""


class HostUnreachable(ApplicationError):
    """The host's agent is not online: nothing is queued for it (a 503 naming the host)."""

    code = "host_offline"


def host_acting_check() -> Host:
    """The host at hand, when its agent can act now; ``HostUnreachable`` (naming the host and
    when it was last seen) when it is offline or never seen."""
    name = host_name()
    host = Host.objects.filter(name=name).first()
    if host is None:
        if name == settings.GPUCONFIG_HOST_NAME:
            return local_host_ensure()
        raise HostUnreachable(f"Host {name!r} is not registered; nothing was queued.")
    state = host_state(host)
    if state == HostState.ONLINE:
        return host
    if state == HostState.NEVER_SEEN:
        seen = "its agent has never been seen"
    else:
        seen = f"its agent was last seen {host.last_heartbeat:%Y-%m-%d %H:%M:%S %Z}"
    raise HostUnreachable(
        f"Host {host.name!r} is offline ({seen}); nothing was queued. Start its agent "
        "(gpuconfig agent) and try again.",
    )


def broker_identity() -> BrokerIdentity:
    return BrokerIdentity.from_url(settings.CELERY_BROKER_URL)


def host_register(
    *, name: str, display_name: str = "", broker_user: str = "", runtime: str = ""
) -> Host:
    """Register a GPU host, so its agent's messages are accepted (from ``broker_user``,
    ``gpuconfig-agent-<name>`` unless given)."""
    if not re.match(HOST_NAME_PATTERN, name or ""):
        raise HostInvalid(
            f"host name {name!r} must be lower-case letters, digits and dashes (at most 63)"
        )
    try:
        with transaction.atomic():
            return Host.objects.create(
                name=name,
                display_name=display_name,
                broker_user=broker_user or broker_user_for(name),
                runtime=runtime,
            )
    except IntegrityError as exc:
        raise HostInvalid(f"a host named {name!r} is already registered") from exc


def local_host_ensure() -> Host:
    """This machine's own host (``GPUCONFIG_HOST_NAME``): its worker is its agent, and its
    messages travel on the centre's own broker connection."""
    host, _ = Host.objects.get_or_create(name=settings.GPUCONFIG_HOST_NAME)
    return host


def local_heartbeat_record() -> Host:
    """This machine's own heartbeat, written by its worker (in a thread of its own: the
    connection is closed after, so a database restart between beats costs one beat)."""
    try:
        host = local_host_ensure()
        Host.objects.filter(pk=host.pk).update(
            last_heartbeat=timezone.now(),
            last_heartbeat_sent_at=timezone.now(),
            agent_version=agent_version(),
            runtime=str(settings.GPUCONFIG_CONTAINER_RUNTIME),
        )
        return host
    finally:
        close_old_connections()


def sender_host(claimed_host: str, *, sender: str | None) -> Host:
    """The registered host a message names, once its sender may speak for it (the host's own
    broker user, as the broker stamped it; over Redis, only this machine's own host): every
    message from an agent goes through here before anything is written. Raises
    ``SenderRefused`` (the caller logs it and writes nothing)."""
    host = Host.objects.filter(name=claimed_host).first()
    if host is None and claimed_host == settings.GPUCONFIG_HOST_NAME:
        host = local_host_ensure()
    check_sender(
        claimed_host=claimed_host,
        host_broker_user=None if host is None else host.broker_user,
        local_host=settings.GPUCONFIG_HOST_NAME,
        sender=sender,
        broker=broker_identity(),
    )
    return host


def heartbeat_receive(payload: dict, *, sender: str | None) -> Host | None:
    """Take in one heartbeat: refused (logged, nothing written) when malformed or when its
    sender may not speak for the host it names; else the host's last heartbeat moves."""
    try:
        beat = Heartbeat.from_payload(payload)
        host = sender_host(beat.host, sender=sender)
    except (MessageInvalid, SenderRefused) as exc:
        claimed = payload.get("host", "") if isinstance(payload, dict) else ""
        logger.warning(
            "Heartbeat refused: %s",
            exc,
            extra={"sender": sender or "", "claimed_host": str(claimed)[:63]},
        )
        return None
    now = timezone.now()
    Host.objects.filter(pk=host.pk).update(
        last_heartbeat=now,
        last_heartbeat_sent_at=beat.sent_at,
        agent_version=beat.agent_version,
        runtime=beat.runtime or host.runtime,
    )
    host.refresh_from_db()
    return host
