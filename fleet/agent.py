"""The agent's side of the fleet: what runs on a GPU host with no database credentials.

An agent is a Celery worker (``gpuconfig agent``, ``GPUCONFIG_ROLE=agent``) that reads only its
host's queue and reports through the central exchange. It beats its heart by itself, every
``GPUCONFIG_HEARTBEAT_INTERVAL`` seconds, from a thread of its main process: no beat of the
centre is needed, and a host whose agent is gone is seen offline after three missed beats.
Nothing here reads or writes the database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from celery import current_app
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

from fleet.identity import BrokerIdentity
from fleet.messages import Heartbeat
from fleet.routing import CENTRAL_EXCHANGE, CENTRAL_ROUTING_KEY, HEARTBEAT_TASK
from gpuconfig_site.periodic import PeriodicThread


def agent_version() -> str:
    try:
        return version("gpuconfig")
    except PackageNotFoundError:
        return "unknown"


def heartbeat_now() -> Heartbeat:
    return Heartbeat(
        host=settings.GPUCONFIG_HOST_NAME,
        agent_version=agent_version(),
        runtime=str(settings.GPUCONFIG_CONTAINER_RUNTIME),
        sent_at=datetime.now(UTC),
    )


def heartbeat_send(app) -> None:
    """Publish one heartbeat to the central exchange, stamped with this agent's broker user
    (RabbitMQ refuses a user_id that is not the connection's own)."""
    identity = BrokerIdentity.from_url(app.conf.broker_url or "")
    options = {"user_id": identity.own_user} if identity.authenticates else {}
    app.send_task(
        HEARTBEAT_TASK,
        args=[heartbeat_now().as_payload()],
        exchange=CENTRAL_EXCHANGE,
        routing_key=CENTRAL_ROUTING_KEY,
        declare=[],
        expires=max(settings.GPUCONFIG_HEARTBEAT_INTERVAL * 3, 5),
        **options,
    )


# A daemon thread that beats at once and then every ``GPUCONFIG_HEARTBEAT_INTERVAL`` seconds; a
# beat that fails (broker or database away) is logged and tried again at the next one. Its tick
# is what one beat does: an agent publishes (``heartbeat_send``), the single-box worker writes
# its own host's beat in-process.
HeartbeatSender = PeriodicThread(
    "gpuconfig-host-heartbeat",
    None,
    lambda: float(settings.GPUCONFIG_HEARTBEAT_INTERVAL),
    immediate=True,
)


@worker_ready.connect
def _start_agent_heartbeat(sender=None, **_kwargs) -> None:
    if settings.GPUCONFIG_ROLE == "agent":
        app = getattr(sender, "app", None) or current_app
        HeartbeatSender.start(lambda: heartbeat_send(app))


@worker_shutdown.connect
def _stop_agent_heartbeat(**_kwargs) -> None:
    HeartbeatSender.stop()
