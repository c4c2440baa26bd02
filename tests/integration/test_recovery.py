"""Self-healing apply: an apply interrupted by a dead worker or a restarted engine is repaired
without anyone touching it (a real worker, the real Redis and the real Docker engine)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from applies import progress
from applies.models import ApplyRun
from applies.runtime.docker import DockerRuntime
from assignments.services import config_save
from tests.conftest import wait_for
from tests.integration.conftest import stack_on_gpu0
from tests.integration.recovery_checks import (
    wait_dead,
    wait_settled,
    worker_env,
)
from tests.plugins.chaos import KillPoint
from tests.plugins.dockerd import SCRIPT, SERVICES, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def ids(stack) -> dict[str, str]:
    return {s: stack.container(s)["Id"] for s in SERVICES}


def interrupted_run() -> ApplyRun:
    return ApplyRun.objects.order_by("created_at", "pk").first()


def test_a_worker_killed_after_the_rename_is_recovered_by_its_restart(
    docker_box, celery_worker_factory
):
    """Found 1: killed with the old container aside and the new one only created. The worker
    restarted at once (well within the lock TTL) puts the old one back, the run is marked
    interrupted, and Apply works again."""
    stack, client = docker_box
    before = ids(stack)
    worker = celery_worker_factory(env=worker_env(KillPoint("ai-clip", "create_copy", 1, "after")))
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 1}])
    assert client.post("/api/system/gpu-config/apply").status_code == 202
    killed = wait_dead(worker)
    assert any("-gpuconfig-old-" in c["Names"][0] for c in stack.containers())
    assert interrupted_run().status == "running"  # the dead run still holds the active slot

    celery_worker_factory(env=worker_env())
    wait_settled(stack, since=killed)

    assert ids(stack) == before
    run = interrupted_run()
    assert run.status == "interrupted", run.error
    assert "ai-clip" in run.error and "worker" in run.error
    assert not ApplyRun.objects.filter(status__in=ApplyRun.ACTIVE).exists()
    statuses = {e["service"]: e["status"] for e in progress.progress_get(str(run.operation_id))}
    assert statuses["ai-clip"] not in ("stopping", "recreating", "starting", "waiting_health")
    assert client.post("/api/system/gpu-config/apply").status_code == 202  # not stuck


def test_apply_recovers_a_dead_run_before_it_checks_the_lock(docker_box, celery_worker_factory):
    """Found 1: with no worker restarted, the next Apply itself recognises the dead run (its
    lock still held), restores the service and starts a new apply instead of answering 409."""
    stack, client = docker_box
    before = ids(stack)
    worker = celery_worker_factory(env=worker_env(KillPoint("ai-clip", "rename", 1, "after")))
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 1}])
    client.post("/api/system/gpu-config/apply")
    wait_dead(worker)
    assert interrupted_run().status == "running"

    res = client.post("/api/system/gpu-config/apply")

    assert res.status_code == 202, res.json()
    assert res.json()["restarted_services"] == ["ai-clip"]
    assert ids(stack) == before
    assert stack.container("ai-clip")["State"]["Running"]
    assert interrupted_run().status == "interrupted"


def test_a_worker_killed_between_stop_and_rename_is_recovered(docker_box, celery_worker_factory):
    """Found 10: killed once the stop returned and before the rename, the service is stopped
    under its own name; recovery knows from the run's record that it stopped it, and starts it."""
    stack, client = docker_box
    before = ids(stack)
    worker = celery_worker_factory(env=worker_env(KillPoint("ai-clip", "stop", 1, "after")))
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 1}])
    client.post("/api/system/gpu-config/apply")
    killed = wait_dead(worker)
    assert stack.container("ai-clip")["State"]["Status"] == "exited"

    celery_worker_factory(env=worker_env())
    wait_settled(stack, since=killed)

    assert ids(stack) == before
    assert interrupted_run().status == "interrupted"


PRIVATE_ENGINE_DIR = "/tmp/gcd-recovery"  # short: the socket path must fit in 108 bytes


@pytest.fixture
def private_engine(tmp_path, monkeypatch, simulated_gpus, settings, staff_user, live_db):
    """A Docker engine of this test alone (restarting the shared one would disturb every other
    test that uses it), with the five services on GPU 0 (see ``stack_on_gpu0``). Yields the
    stack, a staff API client and a function that stops the engine and starts it again,
    returning when (monotonic) it answered."""
    env = {**os.environ, "GPUCONFIG_DOCKERD_DIR": PRIVATE_ENGINE_DIR}

    def script(command: str) -> str:
        done = subprocess.run(
            [str(SCRIPT), command], env=env, check=True, timeout=180, capture_output=True, text=True
        )
        return done.stdout

    host = next(
        line.split("=", 1)[1]
        for line in script("start").splitlines()
        if line.startswith("DOCKER_HOST=")
    )
    monkeypatch.setenv("DOCKER_HOST", host)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)

    def restart() -> float:
        script("stop")
        script("start")  # returns once the engine answers
        return time.monotonic()

    try:
        with running_stack(tmp_path / "stack") as stack:
            yield (*stack_on_gpu0(stack, simulated_gpus, settings, staff_user), restart)
    finally:
        script("stop")


REPAIR_WITHIN_S = 10  # from the engine answering again to every service running, healthy


def test_an_engine_restart_mid_apply_is_repaired_as_soon_as_it_answers(
    private_engine, celery_worker_factory
):
    """Found 2 and issue 19's item 5: the engine restarts while three services move. The worker
    (no beat: nothing periodic helps) repairs as soon as the engine answers again: within
    REPAIR_WITHIN_S every service has one running, healthy container, none is left aside, and
    the run is not left running. The next apply restarts what still differs from the saved
    configuration."""
    stack, client, restart = private_engine
    celery_worker_factory(env=worker_env())
    config_save(
        assignments=[
            {"service": "ai-clip", "gpu_index": 1},
            {"service": "ai-florence", "gpu_index": 1},
            {"service": "ai-llm", "gpu_index": 99},
        ]
    )
    op = client.post("/api/system/gpu-config/apply").json()["operation_id"]

    def waiting():
        entries = {e["service"]: e["status"] for e in progress.progress_get(op)}
        return entries.get("ai-llm") == "waiting_health"

    wait_for(waiting, timeout=30, interval=0.05, what="ai-llm to wait for health")
    answered = restart()

    took = wait_settled(stack, since=answered, timeout=REPAIR_WITHIN_S)
    stack.wait_healthy(timeout=max(REPAIR_WITHIN_S - (time.monotonic() - answered), 0.1))
    healthy = time.monotonic() - answered
    print(f"\nafter the engine answered: settled in {took:.1f} s, healthy in {healthy:.1f} s")

    runtime = DockerRuntime(project=stack.project)
    still_differs = [
        s
        for s, gpu in (("ai-clip", "1"), ("ai-florence", "1"), ("ai-llm", "99"))
        if runtime.inspect(s).device_ids != (gpu,)
    ]
    assert "ai-llm" in still_differs  # its copy never got healthy: the old one runs
    res = client.post("/api/system/gpu-config/apply")
    assert res.status_code == 202, res.json()
    assert sorted(res.json()["restarted_services"]) == sorted(still_differs)


def test_a_replacement_healthy_at_the_kill_is_kept(docker_box, celery_worker_factory):
    """Killed while it waited for the copy's health: the copy became healthy anyway. Recovery
    keeps it (the apply's aim, reached) instead of restoring the old container, which would be
    one restart more."""
    stack, client = docker_box
    before = ids(stack)
    # Right after the copy's start: the record says "created", and the worker dies before its
    # health wait sees the copy healthy.
    worker = celery_worker_factory(env=worker_env(KillPoint("ai-clip", "start", 1, "after")))
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 1}])
    assert client.post("/api/system/gpu-config/apply").status_code == 202
    killed = wait_dead(worker)
    assert interrupted_run().journal["ai-clip"]["step"] == "created"

    def healthy_copy():
        container = stack.container("ai-clip")
        health = container["State"].get("Health") or {}
        return container if health.get("Status") == "healthy" else None

    copy = wait_for(healthy_copy, timeout=30, what="the copy to become healthy, unwatched")
    assert copy["Id"] != before["ai-clip"]

    celery_worker_factory(env=worker_env())
    wait_settled(stack, since=killed)

    after = ids(stack)
    assert after["ai-clip"] == copy["Id"]  # kept, not restored
    assert {s: after[s] for s in SERVICES if s != "ai-clip"} == {
        s: before[s] for s in SERVICES if s != "ai-clip"
    }
    assert DockerRuntime(project=stack.project).inspect("ai-clip").device_ids == ("1",)
    run = interrupted_run()
    assert run.status == "interrupted"
    assert "restored the previous container" not in run.error
    # Nothing left to do: the next apply restarts nothing.
    res = client.post("/api/system/gpu-config/apply")
    assert res.status_code == 202 and res.json()["restarted_services"] == [], res.json()
