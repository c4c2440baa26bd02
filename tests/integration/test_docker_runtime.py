"""DockerRuntime against a real Docker engine (scripts/test-dockerd.sh) and compose project."""

from __future__ import annotations

import time
import uuid

import docker
import pytest

from applies.runtime.base import Outcome, RuntimeUnavailable, Step
from applies.runtime.docker import DockerRuntime
from applies.runtime.spec import aside_name
from tests.plugins.dockerd import BROKEN_GPU, CRASHING_GPU, IMAGE, proc_environ

pytestmark = [pytest.mark.integration, pytest.mark.docker]


class Recorder:
    """A progress callback that keeps the steps it was given."""

    def __init__(self) -> None:
        self.events: list[tuple[Step, str]] = []

    def __call__(self, step: Step, message: str) -> None:
        self.events.append((step, message))

    @property
    def steps(self) -> list[Step]:
        return [step for step, _ in self.events]


@pytest.fixture
def runtime(compose_stack) -> DockerRuntime:
    return DockerRuntime(project=compose_stack.project, health_timeout=20, health_grace=0.5)


@pytest.fixture
def reading_runtime(compose_stack_shared) -> DockerRuntime:
    """``runtime`` on the module's shared stack, for tests that only read it."""
    return DockerRuntime(project=compose_stack_shared.project, health_timeout=20, health_grace=0.5)


@pytest.fixture
def engine(docker_engine):
    client = docker.from_env()
    yield client.api
    client.close()


@pytest.fixture
def loose_containers(engine):
    """What a test creates outside compose (containers by name, networks, volumes, images);
    removed afterwards."""
    created: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": [], "images": []}
    yield created
    for name in created["containers"]:
        for listed in engine.containers(all=True, filters={"name": name}):
            engine.remove_container(listed["Id"], force=True, v=True)
    for name in created["networks"]:
        try:
            engine.remove_network(name)
        except docker.errors.NotFound:
            pass
    for name in created["volumes"]:
        try:
            engine.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass
    for image in created["images"]:
        try:
            engine.remove_image(image, force=True)
        except docker.errors.NotFound:
            pass


def test_inspect_reads_the_gpu_request_and_budget(reading_runtime, compose_stack_shared):
    """inspect reports the NVIDIA device ids from the compose override and VRAM_BUDGET_GB."""
    runtime, compose_stack = reading_runtime, compose_stack_shared
    enrichment = runtime.inspect("ai-enrichment")
    llm = runtime.inspect("ai-llm")

    assert enrichment.device_ids == ("0",)
    assert enrichment.budget_gb == 6.8
    assert enrichment.status == "running"
    assert enrichment.health == "healthy"
    assert enrichment.name == f"{compose_stack.project}_ai-enrichment_1"
    assert llm.device_ids == ("0",)
    assert llm.budget_gb is None
    assert runtime.inspect("ai-nonexistent") is None


def test_only_the_configured_compose_project_is_managed(compose_stack_shared):
    """With another compose project configured, the stack's containers are not found."""
    compose_stack = compose_stack_shared
    other = DockerRuntime(project=f"not-{compose_stack.project}")

    assert other.inspect("ai-llm") is None
    assert DockerRuntime().inspect("ai-llm") is not None


def test_recreate_moves_a_service_and_keeps_everything_else(runtime, compose_stack, engine):
    """ai-enrichment moves from GPU 0 to GPU 1 with a 3.5 GB budget; the process sees
    NVIDIA_VISIBLE_DEVICES=1 and VRAM_BUDGET_GB=3.5; name, labels, mounts (with their data),
    command, healthcheck and host config are those of the old container; compose still lists it."""
    old = compose_stack.container("ai-enrichment")
    engine.exec_start(engine.exec_create(old["Id"], ["sh", "-c", "echo kept > /scratch/marker"]))
    progress = Recorder()

    result = runtime.recreate("ai-enrichment", device_ids=("1",), budget_gb=3.5, progress=progress)

    assert result.outcome == Outcome.HEALTHY, result.message
    new = compose_stack.container("ai-enrichment")
    assert new["Id"] == result.container_id != old["Id"]
    assert progress.steps == [
        Step.STOPPING,
        Step.RECREATING,
        Step.STARTING,
        Step.WAITING_HEALTH,
        Step.HEALTHY,
    ]
    environ = proc_environ(new["Id"])
    assert environ["NVIDIA_VISIBLE_DEVICES"] == "1"
    assert environ["VRAM_BUDGET_GB"] == "3.5"
    assert runtime.inspect("ai-enrichment").device_ids == ("1",)

    assert new["Name"] == old["Name"]
    assert new["Config"]["Labels"] == old["Config"]["Labels"]
    assert new["Config"]["Cmd"] == old["Config"]["Cmd"]
    assert new["Config"]["Entrypoint"] == old["Config"]["Entrypoint"]
    assert new["Config"]["Image"] == old["Config"]["Image"]
    assert new["Image"] == old["Image"]
    assert new["Config"]["Healthcheck"] == old["Config"]["Healthcheck"]
    assert new["Config"]["WorkingDir"] == old["Config"]["WorkingDir"] == "/data"
    assert [e for e in new["Config"]["Env"] if not e.startswith("VRAM_BUDGET_GB=")] == [
        e for e in old["Config"]["Env"] if not e.startswith("VRAM_BUDGET_GB=")
    ]

    def mounts(attrs):
        return sorted(
            (m["Type"], m.get("Name"), m["Source"], m["Destination"]) for m in attrs["Mounts"]
        )

    assert mounts(new) == mounts(old)
    marker = engine.exec_start(engine.exec_create(new["Id"], ["cat", "/scratch/marker"]))
    assert marker.decode().strip() == "kept"

    old_host = {k: v for k, v in old["HostConfig"].items() if k not in ("DeviceRequests", "Binds")}
    new_host = {k: v for k, v in new["HostConfig"].items() if k not in ("DeviceRequests", "Binds")}
    assert new_host == old_host
    assert new["HostConfig"]["NetworkMode"] == "none"
    assert new["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert set(old["HostConfig"]["Binds"]) <= set(new["HostConfig"]["Binds"])
    assert new["HostConfig"]["DeviceRequests"] == [
        {
            "Driver": "nvidia",
            "Count": 0,
            "DeviceIDs": ["1"],
            "Capabilities": [["gpu"]],
            "Options": {},
        }
    ]

    names = [c["Names"][0].lstrip("/") for c in compose_stack.containers()]
    assert names.count(old["Name"].lstrip("/")) == 1
    assert not [n for n in names if "-gpuconfig-old-" in n]
    listed = compose_stack.compose("ps", "--services", "--filter", "status=running").stdout.split()
    assert "ai-enrichment" in listed
    assert new["Id"] in compose_stack.compose("ps", "-q", "ai-enrichment").stdout.split()


def test_budget_is_removed_when_the_target_has_none(runtime, compose_stack):
    """A target without a budget drops VRAM_BUDGET_GB from the new container."""
    result = runtime.recreate(
        "ai-enrichment", device_ids=("0",), budget_gb=None, progress=Recorder()
    )

    assert result.outcome == Outcome.HEALTHY, result.message
    assert "VRAM_BUDGET_GB" not in proc_environ(result.container_id)
    assert runtime.inspect("ai-enrichment").budget_gb is None


def test_a_new_container_that_never_becomes_healthy_is_rolled_back(runtime, compose_stack):
    """ai-clip's copy on the broken GPU reports unhealthy: the copy is removed and the old
    container runs again under its name with its original id; the result gives the reason and
    the copy's log tail."""
    old = compose_stack.container("ai-clip")
    progress = Recorder()

    result = runtime.recreate(
        "ai-clip", device_ids=(BROKEN_GPU,), budget_gb=None, progress=progress
    )

    assert result.outcome == Outcome.ROLLED_BACK
    assert "unhealthy" in result.message
    assert "GPU 99 is broken" in result.message
    assert f"NVIDIA_VISIBLE_DEVICES={BROKEN_GPU}" in result.message  # from the copy's log
    assert progress.steps[-1] == Step.ROLLED_BACK
    again = compose_stack.container("ai-clip")
    assert again["Id"] == old["Id"]
    assert again["State"]["Running"] is True
    assert runtime.inspect("ai-clip").device_ids == ("0",)
    assert len(compose_stack.containers()) == 5


def test_a_new_container_that_crashes_on_start_is_rolled_back(runtime, compose_stack):
    """ai-llm's copy exits at once (its restart policy would restart it again and again): the
    recreate fails fast instead of waiting out the health timeout, and the old container runs
    again; the message carries the copy's error output."""
    old = compose_stack.container("ai-llm")
    began = time.monotonic()

    result = runtime.recreate(
        "ai-llm", device_ids=(CRASHING_GPU,), budget_gb=None, progress=Recorder()
    )

    assert result.outcome == Outcome.ROLLED_BACK
    assert time.monotonic() - began < runtime.health_timeout
    assert "exit" in result.message or "restarted" in result.message
    assert "CUDA error: no CUDA-capable device is detected" in result.message
    again = compose_stack.container("ai-llm")
    assert again["Id"] == old["Id"] and again["State"]["Running"] is True
    assert len(compose_stack.containers()) == 5


def test_health_timeout_rolls_back(compose_stack):
    """A copy still starting when the health timeout ends is rolled back with that reason."""
    impatient = DockerRuntime(project=compose_stack.project, health_timeout=0.3)
    old = compose_stack.container("ai-florence")

    result = impatient.recreate(
        "ai-florence", device_ids=("1",), budget_gb=None, progress=Recorder()
    )

    assert result.outcome == Outcome.ROLLED_BACK
    assert "within 0.3s" in result.message
    assert compose_stack.container("ai-florence")["Id"] == old["Id"]


def test_a_failing_before_start_rolls_back_with_its_reason(runtime, compose_stack):
    """before_start runs after the old container stopped; when it raises, nothing is created
    and the old container is started again."""
    old = compose_stack.container("ai-yolo26")
    seen = {}

    def before_start():
        listed = [c for c in compose_stack.containers() if c["Id"] == old["Id"]]
        seen["state"] = listed[0]["State"]
        seen["name"] = listed[0]["Names"][0].lstrip("/")
        raise RuntimeError("GPU 1 is still in use by ai-llm")

    result = runtime.recreate(
        "ai-yolo26",
        device_ids=("1",),
        budget_gb=None,
        progress=Recorder(),
        before_start=before_start,
    )

    assert seen["state"] == "exited"
    assert seen["name"] == aside_name(old["Name"].lstrip("/"), old["Id"])
    assert result.outcome == Outcome.ROLLED_BACK
    assert "GPU 1 is still in use by ai-llm" in result.message
    again = compose_stack.container("ai-yolo26")
    assert again["Id"] == old["Id"] and again["State"]["Running"]


def test_recover_restores_a_container_left_aside(runtime, compose_stack, engine):
    """An apply killed after stop + rename leaves the service without its container;
    recover() renames it back and starts it."""
    old = compose_stack.container("ai-llm")
    name = old["Name"].lstrip("/")
    engine.stop(old["Id"], timeout=5)
    engine.rename(old["Id"], aside_name(name, old["Id"]))
    assert runtime.inspect("ai-llm") is None

    restored = runtime.recover()

    assert restored == ["ai-llm"]
    again = compose_stack.container("ai-llm")
    assert again["Id"] == old["Id"]
    assert again["State"]["Running"] is True
    assert runtime.recover() == []


def test_recover_removes_an_unfinished_replacement(runtime, compose_stack, engine):
    """When the killed apply had already created the copy (not started), recover removes the
    copy and restores the old container."""
    old = compose_stack.container("ai-clip")
    name = old["Name"].lstrip("/")
    engine.stop(old["Id"], timeout=5)
    engine.rename(old["Id"], aside_name(name, old["Id"]))
    stray = engine.create_container(
        IMAGE, command=["sleep", "60"], name=name, labels=old["Config"]["Labels"]
    )

    assert runtime.recover() == ["ai-clip"]

    assert compose_stack.container("ai-clip")["Id"] == old["Id"]
    assert not engine.containers(all=True, filters={"id": stray["Id"]})


def test_recover_keeps_a_healthy_replacement(runtime, compose_stack, engine):
    """When the killed apply had got as far as a healthy copy, recover keeps it and removes
    the old container left aside."""
    old = compose_stack.container("ai-florence")
    name = old["Name"].lstrip("/")
    engine.stop(old["Id"], timeout=5)
    engine.rename(old["Id"], aside_name(name, old["Id"]))
    replacement = engine.create_container(
        IMAGE,
        command=["sleep", "60"],
        name=name,
        labels=old["Config"]["Labels"],
        host_config=engine.create_host_config(network_mode="none"),
    )
    engine.start(replacement["Id"])

    assert runtime.recover() == []

    assert compose_stack.container("ai-florence")["Id"] == replacement["Id"]
    assert not engine.containers(all=True, filters={"id": old["Id"]})


def test_container_found_by_name_keeps_networks_aliases_and_settings(engine, loose_containers):
    """A container outside compose is found by its name; its copy keeps both user networks with
    their aliases, its user, working dir, restart policy and limits; without a healthcheck it
    counts as healthy after the grace period."""
    suffix = uuid.uuid4().hex[:8]
    name, net_a, net_b = f"ai-plain-{suffix}", f"gpuct-a-{suffix}", f"gpuct-b-{suffix}"
    loose_containers["containers"].append(name)
    loose_containers["networks"] += [net_a, net_b]
    engine.create_network(net_a, internal=True)
    engine.create_network(net_b, internal=True)
    created = engine.create_container(
        IMAGE,
        command=["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
        name=name,
        user="nobody",
        working_dir="/tmp",
        environment=["MODEL=tiny", "VRAM_BUDGET_GB=2"],
        labels={"role": "plain"},
        host_config=engine.create_host_config(
            network_mode=net_a,
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
            mem_limit="64m",
            device_requests=[
                docker.types.DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu"]])
            ],
        ),
        networking_config=engine.create_networking_config(
            {net_a: engine.create_endpoint_config(aliases=["plain-a"])}
        ),
    )
    engine.connect_container_to_network(created["Id"], net_b, aliases=["plain-b"])
    engine.start(created["Id"])
    before = engine.inspect_container(created["Id"])
    runtime = DockerRuntime(health_timeout=10, health_grace=0.5)
    assert runtime.inspect(name).device_ids == ("all",)
    assert runtime.inspect(name).budget_gb == 2.0

    result = runtime.recreate(name, device_ids=("0", "1"), budget_gb=1.5, progress=Recorder())

    assert result.outcome == Outcome.HEALTHY, result.message
    new = engine.inspect_container(name)
    assert new["Id"] != created["Id"]
    assert proc_environ(new["Id"])["NVIDIA_VISIBLE_DEVICES"] == "0,1"
    assert new["Config"]["Env"] == [
        "VRAM_BUDGET_GB=1.5" if e == "VRAM_BUDGET_GB=2" else e for e in before["Config"]["Env"]
    ]
    assert new["Config"]["User"] == "nobody"
    assert new["Config"]["WorkingDir"] == "/tmp"
    assert new["Config"]["Labels"] == {"role": "plain"}
    assert new["Config"]["Hostname"] == new["Id"][:12]
    assert new["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert new["HostConfig"]["Memory"] == 64 * 1024 * 1024
    networks = new["NetworkSettings"]["Networks"]
    assert set(networks) == {net_a, net_b}
    assert "plain-a" in networks[net_a]["Aliases"]
    assert "plain-b" in networks[net_b]["Aliases"]
    assert created["Id"][:12] not in networks[net_a]["Aliases"]


def test_unreachable_engine_raises_runtime_unavailable_naming_the_socket(monkeypatch, tmp_path):
    """No engine behind DOCKER_HOST: every call raises RuntimeUnavailable saying where it looked."""
    socket = tmp_path / "missing.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    runtime = DockerRuntime()

    for call in (
        lambda: runtime.inspect("ai-llm"),
        lambda: runtime.recover(),
        lambda: runtime.recreate("ai-llm", device_ids=("1",), budget_gb=None, progress=Recorder()),
    ):
        with pytest.raises(RuntimeUnavailable) as caught:
            call()
        assert str(socket) in str(caught.value)
        assert "DOCKER_HOST" in str(caught.value)
        assert "not reachable" in str(caught.value)


def test_copy_runs_the_same_image_and_keeps_anonymous_mount_data(engine, loose_containers):
    """The copy runs the image the old container ran even when its tag has since moved to
    another image, and an anonymous --mount volume comes back with its data."""
    suffix = uuid.uuid4().hex[:8]
    name, tag = f"ai-pinned-{suffix}", f"gpuconfig-test/busybox:pin-{suffix}"
    loose_containers["containers"].append(name)
    engine.tag(IMAGE, "gpuconfig-test/busybox", f"pin-{suffix}")
    created = engine.create_container(
        tag,
        command=["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
        name=name,
        host_config=engine.create_host_config(
            network_mode="none",
            mounts=[docker.types.Mount(target="/cache", source=None, type="volume")],
        ),
    )
    engine.start(created["Id"])
    engine.exec_start(engine.exec_create(created["Id"], ["sh", "-c", "echo warm > /cache/m"]))
    before = engine.inspect_container(created["Id"])
    volume = next(m["Name"] for m in before["Mounts"] if m["Destination"] == "/cache")
    loose_containers["volumes"].append(volume)
    moved = engine.commit(created["Id"], repository="gpuconfig-test/busybox", tag=f"pin-{suffix}")
    loose_containers["images"] += [moved["Id"], tag]
    assert engine.inspect_image(tag)["Id"] != before["Image"]

    result = DockerRuntime(health_grace=0.3).recreate(
        name, device_ids=("1",), budget_gb=None, progress=Recorder()
    )

    assert result.outcome == Outcome.HEALTHY, result.message
    new = engine.inspect_container(name)
    assert new["Id"] != before["Id"]
    assert new["Image"] == before["Image"]
    assert next(m["Name"] for m in new["Mounts"] if m["Destination"] == "/cache") == volume
    warm = engine.exec_start(engine.exec_create(new["Id"], ["cat", "/cache/m"]))
    assert warm.decode().strip() == "warm"
