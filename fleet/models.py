"""The fleet's model: a ``Host`` is one GPU machine with an agent on it.

A host is registered once (``gpuconfig host add``, or the migration for this machine) and then
kept alive by its agent's heartbeats. Its state is derived, never stored: it is online while its
last heartbeat is younger than three heartbeat intervals, offline after that, and never seen
until the first one arrives.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.validators import RegexValidator
from django.db import models

# A host's name is part of queue names and broker user names: lower-case letters, digits and
# dashes, starting with a letter or digit (what a hostname allows).
HOST_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
MISSED_BEATS_OFFLINE = 3


class HostState(models.TextChoices):
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    NEVER_SEEN = "never_seen", "Never seen"


class Host(models.Model):
    name = models.CharField(
        max_length=63,
        unique=True,
        validators=[RegexValidator(HOST_NAME_PATTERN, "lower-case letters, digits and dashes")],
    )
    display_name = models.CharField(max_length=100, blank=True)
    # The broker user the host's agent connects as. On RabbitMQ the broker stamps every message
    # with the user that published it (validated user-id), and the centre accepts a host's
    # heartbeats and results only from this user.
    broker_user = models.CharField(max_length=100, blank=True)
    runtime = models.CharField(max_length=20, blank=True, help_text="docker, podman or simulated")
    compose_project = models.CharField(max_length=100, blank=True)
    compose_file = models.CharField(max_length=500, blank=True)
    agent_version = models.CharField(max_length=40, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    # The agent's own clock at its last heartbeat: the difference to last_heartbeat is the skew.
    last_heartbeat_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.display_name or self.name

    @property
    def queue(self) -> str:
        """The queue only this host's agent consumes."""
        return host_queue(self.name)

    def state_at(self, now: datetime, interval_s: float) -> HostState:
        if self.last_heartbeat is None:
            return HostState.NEVER_SEEN
        if now - self.last_heartbeat > timedelta(seconds=interval_s * MISSED_BEATS_OFFLINE):
            return HostState.OFFLINE
        return HostState.ONLINE


def host_queue(name: str) -> str:
    return f"gpuconfig.host.{name}"
