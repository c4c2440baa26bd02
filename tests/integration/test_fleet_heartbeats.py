"""Two GPU hosts' agents on a real RabbitMQ, beside the central worker: each agent holds no
database and no cache address that leads anywhere, beats its heart through the central
exchange, and speaks only for its own host."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from amqp.exceptions import AccessRefused, PreconditionFailed
from kombu import Connection

from fleet.messages import Heartbeat
from fleet.models import Host
from fleet.routing import (
    CENTRAL_EXCHANGE,
    CENTRAL_ROUTING_KEY,
    HEARTBEAT_TASK,
    broker_user_for,
    host_queue_name,
    topology_declare,
)
from fleet.services import host_register
from gpuconfig_site.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 1.0
NOWHERE = {
    # Addresses that lead nowhere: an agent that touched the database or the cache would fail.
    "DATABASE_URL": "postgres://nobody@127.0.0.1:9/nowhere",
    "REDIS_URL": "redis://127.0.0.1:9/0",
}


class Agent:
    def __init__(self, host: str, broker_url: str, log: Path):
        env = dict(os.environ)
        env.update(
            NOWHERE,
            GPUCONFIG_HOST_NAME=host,
            GPUCONFIG_BROKER_URL=broker_url,
            GPUCONFIG_HEARTBEAT_INTERVAL=str(INTERVAL),
            GPUCONFIG_GPU_BACKEND="simulated",
            PYTHONUNBUFFERED="1",
        )
        self.log_path = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "agent"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def agents(tmp_path):
    started: list[Agent] = []

    def start(host: str, broker_url: str) -> Agent:
        agent = Agent(host, broker_url, tmp_path / f"agent-{host}.log")
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


def host_state(name: str) -> str:
    host = Host.objects.get(name=name)
    return host.state_at(datetime.now(UTC), INTERVAL).value


@pytest.mark.integration
def test_two_agents_beat_through_rabbitmq_and_one_killed_goes_offline(
    fleet_broker, agents, celery_worker_factory, settings, viewer_client
):
    suffix = secrets.token_hex(3)
    a, b = f"gpu-a-{suffix}", f"gpu-b-{suffix}"
    for name in (a, b):
        host_register(name=name, display_name=name.upper())
        fleet_broker.add_agent(name)
    with Connection(fleet_broker.admin_url) as connection:
        topology_declare(connection, [a, b])

    settings.GPUCONFIG_HEARTBEAT_INTERVAL = INTERVAL
    celery_worker_factory(
        name="central",
        env={"GPUCONFIG_BROKER_URL": fleet_broker.admin_url, "GPUCONFIG_HEARTBEAT_INTERVAL": "1"},
    )
    agent_a = agents(a, fleet_broker.agent_url(a))
    agent_b = agents(b, fleet_broker.agent_url(b))

    wait_for(lambda: host_state(a) == "online" and host_state(b) == "online", 60, "both online")
    hosts = {h["name"]: h for h in viewer_client.get("/api/system/hosts").json()}
    assert hosts[a]["state"] == hosts[b]["state"] == "online"
    assert hosts[a]["display_name"] == a.upper()
    assert hosts[a]["agent_version"]  # the package's version, reported by the agent
    # Its scans reach the centre (tests/integration/test_fleet_scans.py); the simulated backend
    # has no GPU file here, so they report an error and no GPU.
    assert hosts[a]["gpus"] == 0

    # An agent is killed: offline after three missed beats; the other stays online.
    agent_b.kill()
    killed_at = time.monotonic()
    wait_for(lambda: host_state(b) == "offline", 30, f"{b} offline")
    assert time.monotonic() - killed_at <= INTERVAL * 3 + 5
    assert host_state(a) == "online"

    # The agent never reached for the database or the cache (their addresses lead nowhere).
    for text in (agent_a.log(), agent_b.log()):
        assert "OperationalError" not in text and "127.0.0.1:9" not in text, text[-2000:]
        assert "this tick failed" not in text, text[-2000:]  # every beat was sent


@pytest.mark.integration
def test_a_message_from_one_host_s_credentials_claiming_another_is_refused(
    fleet_broker, celery_worker_factory
):
    suffix = secrets.token_hex(3)
    a, b = f"gpu-a-{suffix}", f"gpu-b-{suffix}"
    for name in (a, b):
        host_register(name=name)
        fleet_broker.add_agent(name)
    with Connection(fleet_broker.admin_url) as connection:
        topology_declare(connection, [a, b])
    worker = celery_worker_factory(
        name="central", env={"GPUCONFIG_BROKER_URL": fleet_broker.admin_url}
    )
    claim_b = Heartbeat(host=b, agent_version="9.9", runtime="docker", sent_at=datetime.now(UTC))

    def publish_as_a(user_id: str) -> None:
        """A heartbeat for host B, sent over agent A's broker connection through Celery."""
        with Connection(fleet_broker.agent_url(a)) as connection:
            celery_app.send_task(
                HEARTBEAT_TASK,
                args=[claim_b.as_payload()],
                exchange=CENTRAL_EXCHANGE,
                routing_key=CENTRAL_ROUTING_KEY,
                declare=[],
                user_id=user_id,
                connection=connection,
            )

    # 1. A's credentials, honest about being A's user, claiming host B: the centre refuses it.
    publish_as_a(broker_user_for(a))
    wait_for(lambda: "Heartbeat refused" in worker.log(), 20, "the refusal in the log")
    assert f"broker user '{broker_user_for(a)}' may not speak for host '{b}'" in worker.log()
    assert Host.objects.get(name=b).last_heartbeat is None

    # 2. A's credentials pretending to be B's user: the broker itself refuses the message.
    with (
        pytest.raises(PreconditionFailed) as refused,
        Connection(fleet_broker.agent_url(a)) as conn,
    ):
        conn.Producer().publish(
            {"task": HEARTBEAT_TASK},
            exchange=CENTRAL_EXCHANGE,
            routing_key=CENTRAL_ROUTING_KEY,
            user_id=broker_user_for(b),
            declare=[],
        )
        conn.drain_events(timeout=2)
    assert "PRECONDITION_FAILED" in str(refused.value)

    # 3. A's credentials cannot reach B's queue: no work can be planted for B.
    with (
        pytest.raises(AccessRefused) as denied,
        Connection(fleet_broker.agent_url(a)) as conn,
    ):
        conn.Producer().publish({"x": 1}, exchange="", routing_key=host_queue_name(b), declare=[])
        conn.drain_events(timeout=2)
    assert "ACCESS_REFUSED" in str(denied.value)
    assert Host.objects.get(name=b).last_heartbeat is None
