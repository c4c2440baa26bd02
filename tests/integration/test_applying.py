"""diff + execute: only what changed is recreated, VRAM is freed before it is claimed."""

from __future__ import annotations

import threading
import time

import docker
import pytest

from applies.applying import Change, Target, dependencies, diff, execute
from applies.runtime.base import ContainerRuntime, ContainerState, Outcome, RecreateResult, Step
from applies.runtime.docker import DockerRuntime
from tests.plugins.dockerd import BROKEN_GPU, SERVICES, proc_environ

pytestmark = pytest.mark.integration

HEALTH_TIMEOUT = 20


class Recorder:
    """A thread-safe progress callback keeping (time, service, step, message)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, Step, str]] = []
        self._lock = threading.Lock()

    def __call__(self, service: str, step: Step, message: str) -> None:
        with self._lock:
            self.events.append((time.monotonic(), service, step, message))

    def steps(self, service: str) -> list[Step]:
        return [step for _, s, step, _ in self.events if s == service]


def all_on_gpu0(**moves: tuple[tuple[str, ...], float | None]) -> list[Target]:
    """Targets for the five services: GPU 0 with their current budget, except ``moves``."""
    targets = []
    for service in SERVICES:
        budget = 6.8 if service == "ai-enrichment" else None
        device_ids, budget = moves.get(service.replace("-", "_"), (("0",), budget))
        targets.append(
            Target(service, device_ids, budget, latency_critical=service in ("ai-yolo26", "ai-llm"))
        )
    return targets


@pytest.fixture
def runtime(compose_stack) -> DockerRuntime:
    return DockerRuntime(project=compose_stack.project, health_timeout=HEALTH_TIMEOUT)


def ids(compose_stack) -> dict[str, str]:
    return {s: compose_stack.container(s)["Id"] for s in SERVICES}


@pytest.mark.docker
def test_moving_one_service_recreates_only_that_service(runtime, compose_stack):
    """ai-enrichment moves to GPU 1 with a 3.5 GB budget: its new container sees
    NVIDIA_VISIBLE_DEVICES=1 and VRAM_BUDGET_GB=3.5, keeps labels, mounts and command, and the
    other four keep their container ids."""
    before = ids(compose_stack)
    old = compose_stack.container("ai-enrichment")
    progress = Recorder()

    changes = diff(runtime, all_on_gpu0(ai_enrichment=(("1",), 3.5)))
    results = execute(runtime, changes, progress=progress, health_timeout=HEALTH_TIMEOUT)

    assert [c.service for c in changes if c.needs_recreate] == ["ai-enrichment"]
    assert list(results) == ["ai-enrichment"]
    assert results["ai-enrichment"].outcome == Outcome.HEALTHY, results["ai-enrichment"].message
    after = ids(compose_stack)
    assert {s: after[s] for s in SERVICES if s != "ai-enrichment"} == {
        s: before[s] for s in SERVICES if s != "ai-enrichment"
    }
    new = compose_stack.container("ai-enrichment")
    assert new["Id"] != old["Id"]
    environ = proc_environ(new["Id"])
    assert environ["NVIDIA_VISIBLE_DEVICES"] == "1"
    assert environ["VRAM_BUDGET_GB"] == "3.5"
    assert new["Config"]["Labels"] == old["Config"]["Labels"]
    assert new["Config"]["Cmd"] == old["Config"]["Cmd"]
    assert sorted(m["Destination"] for m in new["Mounts"]) == ["/data", "/models", "/scratch"]
    assert sorted(m["Source"] for m in new["Mounts"]) == sorted(m["Source"] for m in old["Mounts"])
    for service in SERVICES:
        if service != "ai-enrichment":
            assert progress.steps(service) == [Step.UNCHANGED]
    assert progress.steps("ai-enrichment") == [
        Step.PENDING,
        Step.STOPPING,
        Step.RECREATING,
        Step.STARTING,
        Step.WAITING_HEALTH,
        Step.HEALTHY,
    ]
    assert "ai-enrichment" in compose_stack.compose("ps", "--services").stdout.split()
    assert not [
        c for c in diff(runtime, all_on_gpu0(ai_enrichment=(("1",), 3.5))) if c.needs_recreate
    ]


@pytest.mark.docker
def test_moving_three_services_runs_them_in_parallel(runtime, compose_stack):
    """Three independent moves overlap in time instead of running one after another."""
    progress = Recorder()
    moves = {s: (("1",), None) for s in ("ai_llm", "ai_clip", "ai_florence")}

    results = execute(
        runtime,
        diff(runtime, all_on_gpu0(**moves)),
        progress=progress,
        health_timeout=HEALTH_TIMEOUT,
    )

    assert {s: r.outcome for s, r in results.items()} == {
        "ai-llm": Outcome.HEALTHY,
        "ai-clip": Outcome.HEALTHY,
        "ai-florence": Outcome.HEALTHY,
    }
    first_healthy = min(t for t, _, step, _ in progress.events if step == Step.HEALTHY)
    last_stopping = max(t for t, _, step, _ in progress.events if step == Step.STOPPING)
    assert last_stopping < first_healthy
    # Latency-critical services are submitted first.
    assert next(s for _, s, step, _ in progress.events if step == Step.PENDING) == "ai-llm"


@pytest.mark.docker
def test_a_swap_starts_each_new_container_only_after_the_other_old_one_stopped(
    runtime, compose_stack
):
    """ai-llm (GPU 0 → 1) and ai-clip (GPU 1 → 0) swap: per the engine's own events, neither
    new container starts before the old container leaving its GPU has died, even when ai-clip
    takes two seconds to stop."""
    setup = runtime.recreate("ai-clip", device_ids=("1",), budget_gb=None, progress=lambda *a: None)
    assert setup.outcome == Outcome.HEALTHY, setup.message
    old = ids(compose_stack)
    client = docker.from_env()
    client.api.exec_start(client.api.exec_create(old["ai-clip"], ["touch", "/tmp/slow-stop"]))
    started_at = int(time.time()) - 1

    changes = diff(runtime, all_on_gpu0(ai_llm=(("1",), None), ai_clip=(("0",), None)))
    assert dependencies(changes) == {"ai-llm": {"ai-clip": ["1"]}, "ai-clip": {"ai-llm": ["0"]}}
    results = execute(runtime, changes, progress=Recorder(), health_timeout=HEALTH_TIMEOUT)

    assert {s: r.outcome for s, r in results.items()} == {
        "ai-llm": Outcome.HEALTHY,
        "ai-clip": Outcome.HEALTHY,
    }, results
    new = ids(compose_stack)
    events = list(
        client.api.events(
            since=started_at,
            until=int(time.time()) + 1,
            filters={
                "type": "container",
                "label": f"com.docker.compose.project={compose_stack.project}",
            },
            decode=True,
        )
    )
    client.close()

    def when(action: str, container_id: str) -> int:
        times = [e["timeNano"] for e in events if e["Action"] == action and e["id"] == container_id]
        assert times, f"no {action} event for {container_id[:12]}"
        return times[0]

    assert when("die", old["ai-clip"]) < when("start", new["ai-llm"])
    assert when("die", old["ai-clip"]) - when("kill", old["ai-clip"]) > 1.5e9  # the slow stop
    assert when("die", old["ai-llm"]) < when("start", new["ai-clip"])
    assert proc_environ(new["ai-llm"])["NVIDIA_VISIBLE_DEVICES"] == "1"
    assert proc_environ(new["ai-clip"])["NVIDIA_VISIBLE_DEVICES"] == "0"


@pytest.mark.docker
def test_a_failing_service_is_rolled_back_while_the_others_go_ahead(runtime, compose_stack):
    """ai-clip's new container never becomes healthy and is rolled back; ai-yolo26, moving at
    the same time, ends healthy on GPU 1."""
    old = ids(compose_stack)

    results = execute(
        runtime,
        diff(runtime, all_on_gpu0(ai_clip=((BROKEN_GPU,), None), ai_yolo26=(("1",), None))),
        progress=Recorder(),
        health_timeout=HEALTH_TIMEOUT,
    )

    assert results["ai-clip"].outcome == Outcome.ROLLED_BACK
    assert "unhealthy" in results["ai-clip"].message
    assert results["ai-yolo26"].outcome == Outcome.HEALTHY
    assert compose_stack.container("ai-clip")["Id"] == old["ai-clip"]
    assert runtime.inspect("ai-yolo26").device_ids == ("1",)


@pytest.mark.docker
def test_a_dependency_that_cannot_stop_rolls_back_the_service_waiting_for_it(
    runtime, compose_stack, engine_api
):
    """In a swap where ai-clip's container vanished before the apply, ai-clip fails at once;
    ai-llm, which needed ai-clip to leave GPU 1, is rolled back instead of waiting forever or
    starting on a GPU still in use."""
    setup = runtime.recreate("ai-clip", device_ids=("1",), budget_gb=None, progress=lambda *a: None)
    assert setup.outcome == Outcome.HEALTHY, setup.message
    old_llm = compose_stack.container("ai-llm")["Id"]
    changes = diff(runtime, all_on_gpu0(ai_llm=(("1",), None), ai_clip=(("0",), None)))
    engine_api.remove_container(compose_stack.container("ai-clip")["Id"], force=True)

    began = time.monotonic()
    results = execute(runtime, changes, progress=Recorder(), health_timeout=HEALTH_TIMEOUT)

    assert time.monotonic() - began < HEALTH_TIMEOUT
    assert results["ai-clip"].outcome == Outcome.FAILED
    assert results["ai-llm"].outcome == Outcome.ROLLED_BACK
    assert "ai-clip could not be stopped" in results["ai-llm"].message
    assert compose_stack.container("ai-llm")["Id"] == old_llm
    assert compose_stack.container("ai-llm")["State"]["Running"] is True


@pytest.mark.docker
def test_a_service_without_a_container_is_reported_not_created(runtime, compose_stack, engine_api):
    engine_api.remove_container(compose_stack.container("ai-florence")["Id"], force=True)
    progress = Recorder()

    changes = diff(runtime, all_on_gpu0(ai_florence=(("1",), None)))
    results = execute(runtime, changes, progress=progress, health_timeout=HEALTH_TIMEOUT)

    florence = next(c for c in changes if c.service == "ai-florence")
    assert florence.missing and not florence.needs_recreate
    assert results == {}
    assert progress.steps("ai-florence") == [Step.UNCHANGED]
    assert runtime.inspect("ai-florence") is None


@pytest.fixture
def engine_api(docker_engine):
    client = docker.from_env()
    yield client.api
    client.close()


# -- ordering rules, without an engine ---------------------------------------------------------


def change(service, current, target, *, latency_critical=False):
    state = ContainerState(service, service, "running", "healthy", tuple(current), None)
    return Change(
        service,
        state,
        Target(service, tuple(target), None, latency_critical),
        tuple(current) != tuple(target),
    )


def test_a_service_waits_only_for_services_leaving_the_gpu_it_moves_onto():
    changes = [
        change("a", ["0"], ["1"]),
        change("b", ["1"], ["2"]),
        change("c", ["2"], ["3"]),
        change("d", ["1"], ["1", "0"]),
    ]

    assert dependencies(changes) == {
        "a": {"b": ["1"]},
        "b": {"c": ["2"]},
        "c": {},
        "d": {"a": ["0"]},
    }


def test_all_gpus_counts_as_every_gpu():
    changes = [change("wide", ["all"], ["0"]), change("narrow", ["1"], ["all"])]

    assert dependencies(changes) == {"wide": {}, "narrow": {"wide": ["*"]}}


def test_budget_only_changes_need_a_recreate_but_no_ordering():
    same_gpu = ContainerState("x", "x", "running", "healthy", ("0",), 6.8)

    class OneContainer(ContainerRuntime):
        def inspect(self, service):
            return same_gpu

    changed, unchanged = diff(
        OneContainer(), [Target("x", ("0",), 3.5, False), Target("x", ("0",), 6.8, False)]
    )

    assert changed.needs_recreate and not unchanged.needs_recreate
    assert dependencies([changed]) == {"x": {}}


class StubbornRuntime(ContainerRuntime):
    """A runtime (to the contract) where one service's stop hangs until released; ``gave_up``
    is set when a waiting service reports its rollback."""

    def __init__(self, hanging: str, hang_for: float) -> None:
        super().__init__()
        self.hanging = hanging
        self.hang_for = hang_for
        self.release = threading.Event()

    def recreate(
        self,
        service,
        *,
        device_ids,
        budget_gb,
        progress,
        before_start=None,
        health_timeout=None,
        journal=None,
    ):
        progress(Step.STOPPING, "stopping")
        if service == self.hanging:
            self.release.wait(self.hang_for)
            return RecreateResult(Outcome.FAILED, "stop did not finish")
        try:
            before_start()
        except Exception as exc:  # noqa: BLE001 - the contract: before_start's error rolls back
            progress(Step.ROLLED_BACK, str(exc))
            return RecreateResult(Outcome.ROLLED_BACK, str(exc))
        progress(Step.HEALTHY, "healthy")
        return RecreateResult(Outcome.HEALTHY, "healthy")


def test_waiting_for_a_dependency_that_never_stops_times_out():
    """A service whose predecessor on the GPU hangs while stopping gives up after the timeout
    and is rolled back while the predecessor still hangs; execute returns once the hanging one
    returns."""
    runtime = StubbornRuntime("slow", hang_for=5)
    changes = [
        change("slow", ["1"], ["0"]),
        change("mover", ["0"], ["1"]),
        change("free", ["2"], ["3"]),
    ]
    gave_up = threading.Event()
    progress = Recorder()

    def record(service: str, step: Step, message: str) -> None:
        progress(service, step, message)
        if service == "mover" and step == Step.ROLLED_BACK:
            gave_up.set()

    began = time.monotonic()
    results = {}
    worker = threading.Thread(
        target=lambda: results.update(
            execute(runtime, changes, progress=record, health_timeout=0.5)
        )
    )
    worker.start()
    # The hanging stop is released only once the waiting service has given up (or after 4 s,
    # which fails the test below): its rollback cannot come from the release.
    gave_up_in_time = gave_up.wait(4)
    runtime.release.set()
    worker.join(10)

    assert gave_up_in_time, "the waiting service should have given up after 0.5 s"
    mover = [e for e in progress.events if e[1] == "mover" and e[2] == Step.ROLLED_BACK]
    assert "slow did not leave GPU 1 within 0.5s" in mover[0][3]
    assert results["mover"].outcome == Outcome.ROLLED_BACK
    assert results["free"].outcome == Outcome.HEALTHY
    assert results["slow"].outcome == Outcome.FAILED
    assert time.monotonic() - began < 5
