"""The central worker's side of the fleet: it takes in what the agents send.

Routed to the ``gpuconfig.central`` queue (``fleet.routing``), which only the central worker
reads; the sender is the broker user the broker stamped on the message.
"""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

from fleet.agent import HeartbeatSender
from fleet.routing import HEARTBEAT_TASK
from fleet.services import heartbeat_receive, local_heartbeat_record


@shared_task(name=HEARTBEAT_TASK, bind=True, ignore_result=True, acks_late=False)
def heartbeat_task(self, payload: dict) -> None:
    heartbeat_receive(payload, sender=(self.request.properties or {}).get("user_id"))


@worker_ready.connect
def _start_local_heartbeat(sender=None, **_kwargs) -> None:
    """The single-box (and central) worker is this machine's agent too: it beats for its own
    host, written in-process (it holds the database; nothing to prove to itself)."""
    if settings.GPUCONFIG_ROLE == "all":
        HeartbeatSender.start(local_heartbeat_record)


@worker_shutdown.connect
def _stop_local_heartbeat(**_kwargs) -> None:
    HeartbeatSender.stop()


# The scans' tasks (the agent's ``fleet.scan``, the centre's ``fleet.scan_report``) live with
# the rest of the scans; imported here so that the workers' task discovery finds them.
from fleet import scans  # noqa: E402, F401
