"""Apply & restart end to end: the API, a real Celery worker on the real Redis, and a real
engine running the five services under compose. Every scenario runs twice: on the Docker engine
under docker-compose and on Podman under podman-compose, with the runtime left on ``auto``."""

from __future__ import annotations

import pytest
import yaml

from applies import progress
from applies.models import ApplyRun
from applies.runtime import get_runtime
from applies.runtime.podman import DEVICES_LABEL
from assignments.services import config_save
from tests.conftest import config_files, wait_for
from tests.integration.conftest import stack_on_gpu0
from tests.plugins.dockerd import SERVICES

pytestmark = [pytest.mark.integration]


@pytest.fixture
def box(engine_stack, simulated_gpus, settings, staff_user, live_db):
    """The stack on GPU 0 on each engine (see ``stack_on_gpu0``)."""
    return stack_on_gpu0(engine_stack, simulated_gpus, settings, staff_user)


def ids(stack) -> dict[str, str]:
    return {s: stack.container(s)["Id"] for s in SERVICES}


def mounts(container: dict) -> list[tuple[str, str]]:
    return sorted((m["Destination"], m["Source"]) for m in container["Mounts"])


def wait_done(client, timeout=90) -> dict:
    def finished():
        body = client.get("/api/system/gpu-config/status").json()
        return body if not body["in_progress"] else None

    return wait_for(finished, timeout=timeout, interval=0.3, what="the apply to finish")


def test_auto_picks_the_engine_that_answers(engine_stack, settings):
    """With GPUCONFIG_CONTAINER_RUNTIME=auto, a Podman socket gets the Podman runtime and a
    Docker socket the Docker runtime, and each finds the services on GPU 0."""
    settings.GPUCONFIG_CONTAINER_RUNTIME = "auto"
    settings.GPUCONFIG_COMPOSE_PROJECT = engine_stack.project

    runtime = get_runtime()

    assert runtime.name == engine_stack.engine
    state = runtime.inspect("ai-enrichment")
    assert (state.device_ids, state.budget_gb, state.health) == (("0",), 6.8, "healthy")


def test_a_no_op_apply_recreates_nothing(box, celery_worker_factory):
    """The saved configuration is what runs: the apply succeeds and every container stays."""
    stack, client = box
    celery_worker_factory()
    before = ids(stack)

    res = client.post("/api/system/gpu-config/apply")

    assert res.status_code == 202
    assert res.json()["restarted_services"] == []
    assert wait_done(client)["run_status"] == "succeeded"
    assert ids(stack) == before
    assert ApplyRun.objects.get().results == {}


def test_moving_enrichment_to_the_small_gpu_recreates_only_it(box, celery_worker_factory, settings):
    stack, client = box
    celery_worker_factory()
    before = ids(stack)
    old = stack.container("ai-enrichment")
    config_save(
        assignments=[{"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 3.5}]
    )

    res = client.post("/api/system/gpu-config/apply")
    assert res.status_code == 202, res.json()
    body = res.json()
    assert body["restarted_services"] == ["ai-enrichment"]
    assert body["operation_id"]

    status = wait_done(client)
    assert status["run_status"] == "succeeded", status
    entry = next(s for s in status["service_statuses"] if s["service"] == "ai-enrichment")
    assert entry["status"] == "healthy"

    after = ids(stack)
    assert after["ai-enrichment"] != before["ai-enrichment"]
    assert {s: after[s] for s in SERVICES if s != "ai-enrichment"} == {
        s: before[s] for s in SERVICES if s != "ai-enrichment"
    }
    new = stack.container("ai-enrichment")
    env = stack.proc_environ(new["Id"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "1"
    assert env["VRAM_BUDGET_GB"] == "3.5"
    # Podman's copies also record the devices they were created with (its inspect hides them).
    assert {k: v for k, v in new["Config"]["Labels"].items() if k != DEVICES_LABEL} == old[
        "Config"
    ]["Labels"]
    assert new["Config"]["Cmd"] == old["Config"]["Cmd"]
    # The same bind mount and the same named and anonymous volumes: their data stays.
    assert mounts(new) == mounts(old)
    assert [d for d, _ in mounts(new)] == ["/data", "/models", "/scratch"]
    assert new["State"]["Health"]["Status"] == "healthy"

    live = client.get("/api/system/gpu-config/services").json()
    assert {s["runtime"] for s in live["services"]} == {stack.engine}
    services = {s["name"]: s for s in live["services"]}
    assert services["ai-enrichment"]["gpu_index"] == 1
    assert services["ai-enrichment"]["health"] == "healthy"
    assert services["ai-enrichment"]["restart_status"] == "healthy"
    override = yaml.safe_load(config_files(settings)["docker-compose.gpu-override.yml"])
    assert override["services"]["ai-enrichment"]["environment"] == ["VRAM_BUDGET_GB=3.5"]
    run = ApplyRun.objects.get()
    assert run.status == "succeeded" and run.results["ai-enrichment"]["outcome"] == "healthy"

    # Nothing changed since: a second apply restarts nothing.
    res = client.post("/api/system/gpu-config/apply")
    assert res.json()["restarted_services"] == []
    wait_done(client)
    assert ids(stack) == after


def test_a_swap_between_gpus_frees_vram_before_claiming_it(box, celery_worker_factory):
    stack, client = box
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 1}])
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 1}])
    worker = celery_worker_factory()
    # Put ai-clip on GPU 1 first, then swap it with ai-florence.
    client.post("/api/system/gpu-config/apply")
    assert wait_done(client)["run_status"] == "succeeded"
    config_save(
        assignments=[
            {"service": "ai-clip", "gpu_index": 0},
            {"service": "ai-florence", "gpu_index": 1},
        ]
    )
    res = client.post("/api/system/gpu-config/apply")
    assert sorted(res.json()["restarted_services"]) == ["ai-clip", "ai-florence"]
    op = res.json()["operation_id"]
    status = wait_done(client)
    assert status["run_status"] == "succeeded", status
    assert stack.proc_environ(stack.container("ai-clip")["Id"])["NVIDIA_VISIBLE_DEVICES"] == "0"
    assert stack.proc_environ(stack.container("ai-florence")["Id"])["NVIDIA_VISIBLE_DEVICES"] == "1"

    def first(service, state):
        entries = {e["service"]: e for e in progress.progress_get(op)}
        return min(h["at"] for h in entries[service]["history"] if h["status"] == state)

    # Each one's new container started only once the other had stopped its old one.
    assert first("ai-clip", "starting") >= first("ai-florence", "recreating")
    assert first("ai-florence", "starting") >= first("ai-clip", "recreating")
    assert "ERROR" not in worker.log()


def test_a_service_that_never_gets_healthy_is_rolled_back(box, celery_worker_factory):
    stack, client = box
    celery_worker_factory()
    before = ids(stack)
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 99}])
    res = client.post("/api/system/gpu-config/apply")
    assert res.json()["restarted_services"] == ["ai-clip"]
    status = wait_done(client)
    assert status["run_status"] == "failed"
    entry = next(s for s in status["service_statuses"] if s["service"] == "ai-clip")
    assert entry["status"] == "rolled_back"
    assert "unhealthy" in entry["message"] and "GPU 99 is broken" in entry["message"], entry[
        "message"
    ]
    assert ids(stack) == before  # the old container runs again under its name
    old = stack.container("ai-clip")
    assert old["State"]["Running"]
    assert stack.proc_environ(old["Id"])["NVIDIA_VISIBLE_DEVICES"] == "0"
    assert "rolled_back" in ApplyRun.objects.get().error


def test_a_second_apply_while_one_runs_gets_409(box, celery_worker_factory):
    stack, client = box
    celery_worker_factory()
    config_save(assignments=[{"service": "ai-llm", "gpu_index": 1}])
    first = client.post("/api/system/gpu-config/apply")
    assert first.status_code == 202
    second = client.post("/api/system/gpu-config/apply")
    assert second.status_code == 409
    assert "already running" in second.json()["detail"]
    wait_done(client)
    assert client.post("/api/system/gpu-config/apply").status_code == 202  # free again
    wait_done(client)


def test_an_unreachable_engine_is_a_clear_error(
    reference_inventory, staff_client, monkeypatch, tmp_path
):
    sock = tmp_path / "missing.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    res = staff_client.post("/api/system/gpu-config/apply")
    assert res.status_code == 503
    detail = res.json()["detail"]
    assert "Cannot reach the container engine" in detail and str(sock) in detail
    assert ApplyRun.objects.get().status == "failed"  # and no longer holds the active slot
    services = staff_client.get("/api/system/gpu-config/services").json()["services"]
    assert {s["status"] for s in services} == {"unknown"}
    assert str(sock) in services[0]["error"]


def test_a_worker_killed_mid_apply_is_recovered_on_restart(box, celery_worker_factory):
    stack, client = box
    # The broken card never gets healthy and the health timeout is far away: the recreate holds
    # in waiting_health (old container aside, new one started) until this test kills the worker.
    env = {"GPUCONFIG_HEALTH_TIMEOUT": "600"}
    worker = celery_worker_factory(env=env)
    before = ids(stack)
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 99}])
    op = client.post("/api/system/gpu-config/apply").json()["operation_id"]

    def held():
        entries = {e["service"]: e for e in progress.progress_get(op)}
        return entries.get("ai-clip", {}).get("status") == "waiting_health"

    wait_for(held, timeout=30, what="the recreate to wait for its new container's health")
    worker.kill()
    names = [c["Names"][0] for c in stack.containers()]
    assert any("-gpuconfig-old-" in n for n in names), names  # left aside by the dead worker

    celery_worker_factory(env=env)
    run = wait_for(
        lambda: ApplyRun.objects.filter(status="interrupted").first(),
        timeout=30,
        what="the interrupted run to be marked interrupted",
    )
    assert "worker carrying out this apply stopped" in run.error and "ai-clip" in run.error
    client_names = [c["Names"][0] for c in stack.containers()]
    assert not any("-gpuconfig-old-" in n for n in client_names)
    assert ids(stack) == before
    assert stack.container("ai-clip")["State"]["Running"]
    assert client.post("/api/system/gpu-config/apply").status_code == 202  # not stuck
