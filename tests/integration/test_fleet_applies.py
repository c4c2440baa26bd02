"""Applies on fleet hosts, carried out by each host's agent over a real RabbitMQ.

Two GPU hosts, A and B, each with its own private Docker engine running the five services
(busybox stand-ins, ``network_mode: none``) under compose, and its own agent (``manage.py
agent``) whose ``DOCKER_HOST`` is its own engine and whose database and cache addresses lead
nowhere. The central worker (on the test database) builds each plan and takes in progress
and outcomes; it touches no engine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from celery import current_app
from kombu import Connection

from applies.models import ApplyRun
from applies.services import apply_start
from applies.tasks import apply_config_task
from assignments.services import config_save
from fleet.routing import (
    APPLY_OUTCOME_TASK,
    APPLY_PROGRESS_TASK,
    CENTRAL_EXCHANGE,
    CENTRAL_ROUTING_KEY,
    broker_user_for,
    topology_declare,
)
from fleet.services import host_register
from gpuconfig_site.hosts import host_scope
from gpus.backends.base import GpuReading
from gpus.services import scan_report_ingest
from tests.conftest import wait_for
from tests.plugins.chaos import KILL_ENV
from tests.plugins.dockerd import SCRIPT, SERVICES, docker_env, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
ENGINE_DIRS = {"a": "/tmp/gcd-fa1", "b": "/tmp/gcd-fa2"}
NOWHERE = {
    # Addresses that lead nowhere: an agent that touched the database or the cache would fail.
    "DATABASE_URL": "postgres://nobody@127.0.0.1:9/nowhere",
    "REDIS_URL": "redis://127.0.0.1:9/0",
}
READINGS = [
    GpuReading(index=0, uuid="GPU-x0", name="NVIDIA RTX A5500", vram_total_mb=24564),
    GpuReading(index=1, uuid="GPU-x1", name="NVIDIA RTX A400", vram_total_mb=4094),
]
HEALTH_TIMEOUT = 30


@pytest.fixture(scope="module", autouse=True)
def _engines_stopped_after():
    """The module's two engines are started by its first test and reused; stopped at its end,
    so nothing of this module outlives it."""
    yield
    for directory in ENGINE_DIRS.values():
        subprocess.run(
            [str(SCRIPT), "stop"],
            env={**os.environ, "GPUCONFIG_DOCKERD_DIR": directory},
            capture_output=True,
            timeout=120,
            check=False,
        )


def private_engine(directory: str) -> str:
    """Start (or reuse) a private dockerd under ``directory``; its DOCKER_HOST."""
    result = subprocess.run(
        [str(SCRIPT), "start"],
        env={**os.environ, "GPUCONFIG_DOCKERD_DIR": directory},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"private dockerd in {directory} failed:\n{result.stderr}")
    return next(
        line.split("=", 1)[1]
        for line in result.stdout.splitlines()
        if line.startswith("DOCKER_HOST=")
    )


class Site:
    """One GPU host: its name, its engine, its compose project and its agent."""

    def __init__(self, name: str, engine: str, stack, tmp: Path, broker_url: str):
        self.name, self.engine, self.stack = name, engine, stack
        self.tmp, self.broker_url = tmp, broker_url
        self.agent: subprocess.Popen | None = None
        self.log_path = tmp / f"agent-{name}.log"

    def start_agent(self, **extra: str) -> None:
        env = dict(os.environ)
        env.update(
            NOWHERE,
            GPUCONFIG_HOST_NAME=self.name,
            GPUCONFIG_BROKER_URL=self.broker_url,
            GPUCONFIG_HEARTBEAT_INTERVAL="1",
            GPUCONFIG_GPU_BACKEND="simulated",
            GPUCONFIG_CONTAINER_RUNTIME="docker",
            GPUCONFIG_COMPOSE_PROJECT=self.stack.project,
            GPUCONFIG_VAR_DIR=str(self.tmp / "var"),
            GPUCONFIG_CONFIG_DIR=str(self.tmp / "config"),
            DOCKER_HOST=self.engine,
            PYTHONUNBUFFERED="1",
        )
        env.pop("CONTAINER_HOST", None)
        env.pop(KILL_ENV, None)
        env.update(extra)
        readies = self.log().count(" ready.")
        with open(self.log_path, "ab") as out:
            self.agent = subprocess.Popen(
                [sys.executable, "manage.py", "agent"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(
            lambda: self.log().count(" ready.") > readies, 60, what=f"the agent of {self.name}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            os.killpg(self.agent.pid, signal.SIGKILL)
            self.agent.wait(10)

    def containers(self) -> dict[str, dict]:
        """Each service's container on this host's engine: id, state, devices, budget."""
        client = docker.DockerClient(base_url=self.engine)
        try:
            out = {}
            for listed in client.api.containers(
                all=True, filters={"label": f"com.docker.compose.project={self.stack.project}"}
            ):
                info = client.api.inspect_container(listed["Id"])
                service = info["Config"]["Labels"]["com.docker.compose.service"]
                requests = info["HostConfig"].get("DeviceRequests") or []
                out.setdefault(service, []).append(
                    {
                        "id": info["Id"],
                        "name": info["Name"].lstrip("/"),
                        "status": info["State"]["Status"],
                        "devices": [d for r in requests for d in r.get("DeviceIDs") or []],
                        "env": info["Config"].get("Env") or [],
                    }
                )
            return out
        finally:
            client.close()

    def ids(self) -> dict[str, str]:
        found = self.containers()
        assert all(len(v) == 1 for v in found.values()), found
        return {s: v[0]["id"] for s, v in found.items()}


@pytest.fixture
def fleet(fleet_broker, celery_worker_factory, tmp_path, settings, monkeypatch):
    """Hosts A and B registered (with broker users and their first scan taken in), each with
    the five services on GPU 0 on its own engine, saved as its configuration; the central
    worker on the test vhost. Agents are started by the test (``Site.start_agent``)."""
    suffix = secrets.token_hex(3)
    names = {key: f"fa-{key}-{suffix}" for key in ENGINE_DIRS}
    engines = {key: private_engine(path) for key, path in ENGINE_DIRS.items()}
    settings.GPUCONFIG_HEALTH_TIMEOUT = HEALTH_TIMEOUT
    for name in names.values():
        host_register(name=name)
        fleet_broker.add_agent(name)
    with Connection(fleet_broker.admin_url) as connection:
        topology_declare(connection, list(names.values()))
    central = celery_worker_factory(
        name="central",
        env={
            "GPUCONFIG_BROKER_URL": fleet_broker.admin_url,
            "GPUCONFIG_HEALTH_TIMEOUT": str(HEALTH_TIMEOUT),
        },
    )
    sites: dict[str, Site] = {}
    with contextlib.ExitStack() as stacks:
        for key, name in names.items():
            with docker_env(engines[key]):
                stack = stacks.enter_context(running_stack(tmp_path / f"stack-{key}"))
            # The stack is taken down on the same engine (ExitStack runs this first).
            stacks.callback(monkeypatch.setenv, "DOCKER_HOST", engines[key])
            site_dir = tmp_path / f"site-{key}"
            site_dir.mkdir()
            sites[key] = Site(name, engines[key], stack, site_dir, fleet_broker.agent_url(name))
            with host_scope(name):
                assert scan_report_ingest(readings=READINGS, backend="nvml")["error"] is None
                config_save(
                    strategy="manual",
                    assignments=[{"service": s, "gpu_index": 0} for s in SERVICES],
                )
        try:
            yield sites, fleet_broker, central
        finally:
            for site in sites.values():
                site.kill_agent()


def apply_on(host: str, broker_url: str) -> ApplyRun:
    """Start an apply on ``host`` and hand it to the central worker, as the API does."""
    with host_scope(host):
        run, _pending = apply_start(actor="test")
        with Connection(broker_url) as connection:
            apply_config_task.apply_async(args=[run.pk], connection=connection)
    return run


def finished(run: ApplyRun, timeout: float = 120) -> ApplyRun:
    def done():
        run.refresh_from_db()
        return run if run.is_finished else None

    return wait_for(done, timeout, interval=0.3, what=f"apply {run.operation_id} to finish")


def enrichment_to_gpu1(host: str) -> None:
    with host_scope(host):
        config_save(
            assignments=[{"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 3.5}]
        )


def assert_agents_held_nothing_central(*sites: Site) -> None:
    for site in sites:
        text = site.log()
        assert "OperationalError" not in text and "127.0.0.1:9" not in text, text[-3000:]


def test_an_apply_on_host_a_recreates_only_a_s_changed_container(fleet):
    sites, broker, _central = fleet
    a, b = sites["a"], sites["b"]
    a.start_agent()
    b.start_agent()
    before_a, before_b = a.ids(), b.ids()
    enrichment_to_gpu1(a.name)

    run = finished(apply_on(a.name, broker.admin_url))

    assert run.status == "succeeded", (run.error, run.log)
    assert run.host == a.name
    assert run.results["ai-enrichment"]["outcome"] == "healthy"
    assert set(run.results) == {"ai-enrichment"}
    after_a = a.ids()
    assert after_a["ai-enrichment"] != before_a["ai-enrichment"]
    assert {s: after_a[s] for s in SERVICES if s != "ai-enrichment"} == {
        s: before_a[s] for s in SERVICES if s != "ai-enrichment"
    }
    moved = a.containers()["ai-enrichment"][0]
    assert moved["status"] == "running" and moved["devices"] == ["1"]
    assert "VRAM_BUDGET_GB=3.5" in moved["env"]
    assert b.ids() == before_b  # B untouched: the same containers
    # The agent wrote the generated files into its own folder; its journal is gone once sent.
    override = (a.tmp / "config" / "docker-compose.gpu-override.yml").read_text()
    assert "VRAM_BUDGET_GB=3.5" in override
    assert not list((a.tmp / "var" / "fleet-applies").glob("run-*.json"))
    assert_agents_held_nothing_central(a, b)


def test_applies_on_two_hosts_at_the_same_time_both_succeed(fleet):
    sites, broker, _central = fleet
    a, b = sites["a"], sites["b"]
    a.start_agent()
    b.start_agent()
    before = {key: site.ids() for key, site in sites.items()}
    enrichment_to_gpu1(a.name)
    enrichment_to_gpu1(b.name)

    run_a = apply_on(a.name, broker.admin_url)
    run_b = apply_on(b.name, broker.admin_url)  # A's is still active: one per host
    run_a, run_b = finished(run_a), finished(run_b)

    assert (run_a.status, run_b.status) == ("succeeded", "succeeded"), (run_a.error, run_b.error)
    # The two runs were carried out at the same time, each by its host's agent.
    assert run_a.started_at < run_b.finished_at and run_b.started_at < run_a.finished_at
    assert (run_a.worker, run_b.worker) == (f"agent:{a.name}", f"agent:{b.name}")
    for key, site in sites.items():
        after = site.ids()
        assert after["ai-enrichment"] != before[key]["ai-enrichment"]
        assert site.containers()["ai-enrichment"][0]["devices"] == ["1"]
    assert_agents_held_nothing_central(a, b)


def test_an_agent_killed_mid_apply_repairs_from_its_journal_when_it_starts_again(fleet):
    sites, broker, _central = fleet
    b = sites["b"]
    # The agent kills its whole process group during the health wait of the new container.
    b.start_agent(
        GPUCONFIG_CONTAINER_RUNTIME="tests.plugins.chaos.ChaosDockerRuntime",
        **{KILL_ENV: "ai-enrichment:inspect:3:before"},
    )
    before = b.ids()
    enrichment_to_gpu1(b.name)

    run = apply_on(b.name, broker.admin_url)
    assert b.agent is not None
    b.agent.wait(60)  # it killed itself mid-apply
    journal_files = list((b.tmp / "var" / "fleet-applies").glob("run-*.json"))
    assert len(journal_files) == 1, "the local journal of the interrupted run"
    run.refresh_from_db()
    assert run.status == "running"

    b.start_agent()
    run = finished(run, timeout=60)

    assert run.status == "interrupted", (run.error, run.log)
    assert "repaired" in run.error
    containers = b.containers()
    assert set(containers) == set(SERVICES)
    for service, found in containers.items():
        assert len(found) == 1, (service, found)  # nothing left aside
        assert found[0]["status"] == "running", (service, found)
        assert found[0]["name"] == f"{b.stack.project}_{service}_1", found
    assert {s: v[0]["id"] for s, v in containers.items() if s != "ai-enrichment"} == {
        s: before[s] for s in SERVICES if s != "ai-enrichment"
    }
    assert all(e["step"] == "recovered" or e["step"] in ("done",) for e in run.journal.values())
    wait_for(lambda: not list((b.tmp / "var" / "fleet-applies").glob("run-*.json")), 20)
    assert_agents_held_nothing_central(b)


def test_progress_and_outcome_for_another_host_s_run_are_refused(fleet):
    sites, broker, central = fleet
    a, b = sites["a"], sites["b"]
    with host_scope(b.name):
        run_b, _ = apply_start(actor="test")  # queued, not handed to anyone
    run_b.claim(worker=f"agent:{b.name}")
    beat_before = ApplyRun.all_hosts.get(pk=run_b.pk).heartbeat_at
    ids = {"run_id": run_b.pk, "operation_id": str(run_b.operation_id)}

    def publish_as_a(task: str, payload: dict) -> None:
        with Connection(a.broker_url) as connection:
            current_app.send_task(
                task,
                args=[payload],
                exchange=CENTRAL_EXCHANGE,
                routing_key=CENTRAL_ROUTING_KEY,
                declare=[],
                user_id=broker_user_for(a.name),
                connection=connection,
            )

    # A's credentials claiming host B, and A's credentials naming B's run as A's own.
    publish_as_a(
        APPLY_PROGRESS_TASK,
        {**ids, "host": b.name, "service": "ai-llm", "step": "failed", "message": "x"},
    )
    publish_as_a(APPLY_OUTCOME_TASK, {**ids, "host": b.name, "status": "failed", "error": "x"})
    publish_as_a(APPLY_OUTCOME_TASK, {**ids, "host": a.name, "status": "succeeded"})

    wait_for(lambda: central.log().count(" refused: ") >= 3, 30, what="three refusals")
    text = central.log()
    assert f"broker user '{broker_user_for(a.name)}' may not speak for host '{b.name}'" in text
    assert f"apply run {run_b.pk} belongs to host '{b.name}', not '{a.name}'" in text
    run_b.refresh_from_db()
    assert run_b.status == "running" and run_b.results == {} and run_b.error == ""
    assert run_b.heartbeat_at == beat_before
