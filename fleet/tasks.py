"""The central worker's side of the fleet: it takes in what the agents send.

Routed to the ``gpuconfig.central`` queue (``fleet.routing``), which only the central worker
reads; the sender is the broker user the broker stamped on the message.
"""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

# The agent's own tasks live with its side of each flow and are imported here, so that the
# workers' task discovery (which loads this module, and only it on an agent) finds them: the
# scans (``fleet.scan`` on the agent, ``fleet.scan_report`` at the centre) and the applies
# (``fleet.apply`` on the agent).
from applies.remote import remote_outcome_receive, remote_progress_receive
from fleet import applying as _agent_applying  # noqa: F401
from fleet import scans as _scans  # noqa: F401
from fleet.agent import HeartbeatSender
from fleet.routing import APPLY_OUTCOME_TASK, APPLY_PROGRESS_TASK, HEARTBEAT_TASK
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


# --- applies carried out by a host's agent: its reports --------------------------------------


@shared_task(name=APPLY_PROGRESS_TASK, bind=True, ignore_result=True, acks_late=False)
def apply_progress_task(self, payload: dict) -> None:
    remote_progress_receive(payload, sender=(self.request.properties or {}).get("user_id"))


@shared_task(name=APPLY_OUTCOME_TASK, bind=True, ignore_result=True)
def apply_outcome_task(self, payload: dict) -> None:
    remote_outcome_receive(payload, sender=(self.request.properties or {}).get("user_id"))
