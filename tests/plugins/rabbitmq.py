"""A private RabbitMQ vhost per test (on the broker running on 127.0.0.1:5672), with a broker
user per GPU host holding only an agent's permissions; deleted after the test."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest

from fleet.routing import agent_permissions, broker_user_for

RABBITMQ = "127.0.0.1:5672"


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@dataclass
class FleetBroker:
    vhost: str
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def admin_url(self) -> str:
        return f"amqp://guest:guest@{RABBITMQ}/{self.vhost}"

    def add_agent(self, host: str) -> str:
        """A broker user for ``host``'s agent, with an agent's permissions; its broker URL."""
        user = broker_user_for(host)
        password = secrets.token_hex(12)
        rabbitmqctl("add_user", user, password)
        rabbitmqctl("set_permissions", "-p", self.vhost, user, *agent_permissions(host))
        self.passwords[user] = password
        return self.agent_url(host)

    def agent_url(self, host: str) -> str:
        user = broker_user_for(host)
        return f"amqp://{user}:{self.passwords[user]}@{RABBITMQ}/{self.vhost}"


@pytest.fixture
def fleet_broker():
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed: the fleet tests run on a real RabbitMQ")
    vhost = f"gpuconfig-test-{secrets.token_hex(4)}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    broker = FleetBroker(vhost)
    try:
        yield broker
    finally:
        for user in broker.passwords:
            subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
