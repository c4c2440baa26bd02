"""Two GPU hosts' agents on a real RabbitMQ scan their own (simulated) GPUs and report them
through the central exchange; the central worker takes each report in under its own host.

The agents hold no database and no cache address that leads anywhere; the central worker runs
on the test database. Detect for host B goes through the API of this process, which publishes
``fleet.scan`` to B's queue on the same broker.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

import pytest
import yaml
from kombu import Connection

from fleet.routing import topology_declare
from fleet.services import host_register
from gpuconfig_site.celery import app as celery_app
from gpuconfig_site.hosts import host_scope
from gpus.models import Gpu
from gpus.selectors import last_scan_stored
from tests.conftest import REFERENCE_GPUS
from tests.integration.test_fleet_heartbeats import INTERVAL, Agent, host_state, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def host_b_gpus() -> list[dict]:
    """Host B's hardware: the reference cards under other UUIDs, and a third card."""
    entries = yaml.safe_load(REFERENCE_GPUS.read_text())
    for entry in entries:
        entry["uuid"] = f"GPU-host-b-{entry['index']}"
    entries.append(
        {
            "index": 2,
            "name": "NVIDIA L4",
            "uuid": "GPU-host-b-2",
            "vram_total_mb": 23034,
            "vram_used_mb": 100,
            "compute_capability": "8.9",
        }
    )
    return entries


@pytest.fixture
def central_broker(fleet_broker, settings):
    """This process publishes on the fleet's broker (as the web process of a fleet does)."""
    previous = celery_app.conf.broker_url, celery_app.conf.broker_transport
    settings.CELERY_BROKER_URL = fleet_broker.admin_url

    def use(url: str, transport: str | None = None) -> None:
        celery_app.conf.broker_url = url
        celery_app.conf.broker_transport = transport
        # The connection and producer pools were made for the previous broker.
        celery_app._pool = None
        celery_app.amqp._producer_pool = None

    use(fleet_broker.admin_url)
    yield fleet_broker
    use(*previous)


@pytest.fixture
def agent_env(monkeypatch):
    """Environment every agent of this module starts with (read by ``Agent``)."""

    def set_for(gpu_file: Path, scan_interval: int) -> None:
        monkeypatch.setenv("GPUCONFIG_SIMULATED_GPUS", str(gpu_file))
        monkeypatch.setenv("GPUCONFIG_SCAN_INTERVAL", str(scan_interval))

    return set_for


def test_each_host_s_scans_land_under_it_and_a_killed_host_keeps_its_gpus(
    central_broker,
    celery_worker_factory,
    settings,
    staff_client,
    viewer_client,
    client,
    plain_user,
    tmp_path,
    agent_env,
):
    broker = central_broker
    suffix = secrets.token_hex(3)
    a, b = f"gpu-a-{suffix}", f"gpu-b-{suffix}"
    for name in (a, b):
        host_register(name=name)
        broker.add_agent(name)
    with Connection(broker.admin_url) as connection:
        topology_declare(connection, [a, b])
    settings.GPUCONFIG_HEARTBEAT_INTERVAL = INTERVAL
    worker = celery_worker_factory(
        name="central",
        env={"GPUCONFIG_BROKER_URL": broker.admin_url, "GPUCONFIG_HEARTBEAT_INTERVAL": "1"},
    )

    a_file, b_file = tmp_path / "gpus-a.yml", tmp_path / "gpus-b.yml"
    a_gpus, b_gpus = yaml.safe_load(REFERENCE_GPUS.read_text()), host_b_gpus()
    a_file.write_text(yaml.safe_dump(a_gpus))
    b_file.write_text(yaml.safe_dump(b_gpus))
    agents = []
    try:
        # A scans every 2 s; B only at start and when asked (its scans are B's answers).
        agent_env(a_file, 2)
        agents.append(Agent(a, broker.agent_url(a), tmp_path / "agent-a.log"))
        agent_env(b_file, 3600)
        agents.append(Agent(b, broker.agent_url(b), tmp_path / "agent-b.log"))
        agent_a, agent_b = agents

        def uuids(host: str) -> set[str]:
            return set(Gpu.all_hosts.filter(host=host).values_list("uuid", flat=True))

        wait_for(lambda: len(uuids(a)) == 2 and len(uuids(b)) == 3, 60, "both hosts' GPUs")
        assert uuids(a) == {g["uuid"] for g in a_gpus}
        assert uuids(b) == {g["uuid"] for g in b_gpus}
        assert not Gpu.all_hosts.filter(host=settings.GPUCONFIG_HOST_NAME).exists()
        wait_for(lambda: host_state(a) == host_state(b) == "online", 30, "both online")
        hosts = {h["name"]: h for h in viewer_client.get("/api/system/hosts").json()}
        assert (hosts[a]["gpus"], hosts[b]["gpus"]) == (2, 3)
        listed = viewer_client.get(f"/api/system/gpus?host={b}").json()
        assert listed, listed
        # Both hosts on the fleet page, online, with the GPUs their agents reported.
        client.force_login(plain_user)
        page = _fleet_page(client)
        for name, count in ((a, 2), (b, 3)):
            row = _fleet_row(page, name)
            assert "Online" in row, row
            assert re.search(rf'class="num gpu-count">{count}<', row), row

        # Detect for B: the centre asks B's agent, which scans now; the answer is that scan.
        with host_scope(b):
            before = last_scan_stored()["seq"]
        b_gpus[2]["vram_used_mb"] = 7777
        b_file.write_text(yaml.safe_dump(b_gpus))
        response = staff_client.post(f"/api/system/gpu-config/detect?host={b}")
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["fresh"] is True and body["backend"] == "simulated", body
        with host_scope(b):
            assert last_scan_stored()["seq"] > before
        l4 = Gpu.all_hosts.get(host=b, uuid=b_gpus[2]["uuid"])
        assert l4.vram_used_mb == 7777
        assert "Task fleet.scan[" in agent_b.log()

        # B's agent killed: offline within three missed beats; A stays online; an action on B
        # is refused at once, and B's GPUs are still listed (stale, never lost).
        agent_b.kill()
        killed_at = time.monotonic()
        wait_for(lambda: host_state(b) == "offline", 90, f"{b} offline")
        assert host_state(a) == "online"
        started = time.monotonic()
        refused = staff_client.post(f"/api/system/gpu-config/detect?host={b}")
        assert refused.status_code == 503, refused.content
        assert b in refused.json()["detail"]
        apply = staff_client.post(f"/api/system/gpu-config/apply?host={b}", {}, format="json")
        assert apply.status_code == 503, apply.content
        took = time.monotonic() - started
        print(f"offline {started - killed_at:.1f} s after the kill; refused in {took:.2f} s")
        hosts = {h["name"]: h for h in viewer_client.get("/api/system/hosts").json()}
        assert (hosts[b]["state"], hosts[b]["gpus"]) == ("offline", 3)
        page = _fleet_page(client)
        assert "Offline" in _fleet_row(page, b) and "last seen" in _fleet_row(page, b)
        assert "Online" in _fleet_row(page, a)
        assert Gpu.all_hosts.filter(host=b, available=True).count() == 3

        # The agents never reached for the database or the cache; the centre refused nothing.
        for text in (agent_a.log(), agent_b.log()):
            assert "OperationalError" not in text and "127.0.0.1:9" not in text, text[-2000:]
            assert "this tick failed" not in text, text[-2000:]
        assert "Scan report refused" not in worker.log(), worker.log()[-3000:]
    finally:
        for agent in agents:
            agent.kill()


def _fleet_page(client) -> str:
    response = client.get("/settings/fleet/")
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def _fleet_row(page: str, name: str) -> str:
    match = re.search(rf'<tr class="fleet-row[^"]*" id="host-{name}">(.*?)</tr>', page, re.S)
    assert match, f"no fleet row for {name}"
    return match.group(1)
