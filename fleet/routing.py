"""The fleet's broker layout: which exchange and queue each kind of message travels through.

- **Work for a host** (a scan, an apply) is published by the centre to the ``gpuconfig.hosts``
  exchange with the host's name as routing key; it lands in ``gpuconfig.host.<name>``, which
  only that host's agent reads.
- **What an agent reports** (heartbeats, scan results, apply progress and outcomes) goes to the
  ``gpuconfig.central`` exchange, bound to the one ``gpuconfig.central`` queue the central
  worker reads. An agent may write to that exchange and read its own queue, nothing else:
  not the default exchange (through which it could reach any queue), not another host's queue.
- The topology is declared once by the centre with the broker's admin account
  (``gpuconfig host add``); agents never declare anything (``no_declare``), so their broker
  users need no "configure" permission at all.

Names only here, plus the kombu entities built from them: no Django, no database.
"""

from __future__ import annotations

from kombu import Exchange, Queue

CENTRAL_EXCHANGE = "gpuconfig.central"
CENTRAL_QUEUE = "gpuconfig.central"
CENTRAL_ROUTING_KEY = "gpuconfig.central"
HOSTS_EXCHANGE = "gpuconfig.hosts"
HEARTBEAT_TASK = "fleet.heartbeat"


def host_queue_name(host: str) -> str:
    return f"gpuconfig.host.{host}"


def broker_user_for(host: str) -> str:
    """The broker user a host's agent connects as, unless its registration names another."""
    return f"gpuconfig-agent-{host}"


def central_exchange() -> Exchange:
    return Exchange(CENTRAL_EXCHANGE, type="direct", durable=True)


def hosts_exchange() -> Exchange:
    return Exchange(HOSTS_EXCHANGE, type="direct", durable=True)


def central_queue() -> Queue:
    return Queue(CENTRAL_QUEUE, central_exchange(), routing_key=CENTRAL_ROUTING_KEY, durable=True)


def host_queue(host: str, *, declare: bool = True) -> Queue:
    return Queue(
        host_queue_name(host),
        hosts_exchange(),
        routing_key=host,
        durable=True,
        no_declare=not declare,
    )


def agent_permissions(host: str) -> tuple[str, str, str]:
    """``rabbitmqctl set_permissions`` regular expressions (configure, write, read) for an agent:
    it declares nothing, writes only to the central exchange and reads only its own queue."""
    escaped = host_queue_name(host).replace(".", r"\.")
    return ("^$", "^" + CENTRAL_EXCHANGE.replace(".", r"\.") + "$", f"^{escaped}$")


def rabbitmq_commands(host: str, *, vhost: str, user: str, password_file: str) -> list[str]:
    """The shell commands an operator runs on the broker's machine to let a host's agent in."""
    configure, write, read = agent_permissions(host)
    return [
        f'rabbitmqctl add_user {user} "$(cat {password_file})"',
        f"rabbitmqctl set_permissions -p {vhost} {user} '{configure}' '{write}' '{read}'",
    ]


def topology_declare(connection, hosts: list[str]) -> None:
    """Declare the exchanges and queues (the central one and each host's) with an account that
    may: agents declare nothing themselves."""
    channel = connection.default_channel
    central_queue()(channel).declare()
    for host in hosts:
        host_queue(host)(channel).declare()


# --- Scans: the centre asks a host's agent for one; the agent reports each one it makes ---------
SCAN_TASK = "fleet.scan"
SCAN_REPORT_TASK = "fleet.scan_report"
# Applies carried out by a host's agent: the plan goes to the host's queue, progress and the
# outcome come back to the central one.
APPLY_TASK = "fleet.apply"
APPLY_PROGRESS_TASK = "fleet.apply_progress"
APPLY_OUTCOME_TASK = "fleet.apply_outcome"
