"""The "Simulated containers" demo runtime: chosen only when switched on and no engine answers;
its containers live in the cache and their health follows the plan."""

from __future__ import annotations

import pytest

from applies.live import demo_runtime_enable, health_of, live_cached
from applies.runtime import ContainerRuntime, ContainerState, get_runtime
from applies.runtime.base import Outcome, RuntimeUnavailable
from applies.runtime.simulated import SimulatedRuntime, simulated_runtime_enabled

pytestmark = pytest.mark.django_db

NO_ENGINE = "unix:///nonexistent/gpuconfig-test.sock"


class AnsweringRuntime(ContainerRuntime):
    """An engine that answers (no containers): the contract's behaviour when reachable."""

    name = "answering"

    def inspect(self, service: str) -> ContainerState | None:
        return None


class SilentRuntime(ContainerRuntime):
    name = "silent"

    def inspect(self, service: str) -> ContainerState | None:
        raise RuntimeUnavailable("no socket here")


@pytest.fixture
def demo(reference_inventory, settings, monkeypatch):
    """The demo runtime switched on, on a box where no engine answers (it never stands in for
    one that does, such as the test engine `make test` runs)."""
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    settings.GPUCONFIG_SIMULATED_RUNTIME_STEP = 0
    demo_runtime_enable()
    return SimulatedRuntime()


def test_off_until_switched_on(reference_inventory, settings, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    assert not simulated_runtime_enabled()
    settings.GPUCONFIG_CONTAINER_RUNTIME = "docker"
    assert get_runtime().name == "docker"
    settings.GPUCONFIG_CONTAINER_RUNTIME = "auto"
    with pytest.raises(RuntimeUnavailable, match="DOCKER_HOST"):
        get_runtime()


def test_stands_in_for_an_engine_that_does_not_answer(demo, settings):
    settings.GPUCONFIG_CONTAINER_RUNTIME = f"{__name__}.SilentRuntime"
    assert isinstance(get_runtime(), SimulatedRuntime)


def test_never_chosen_when_a_real_engine_answers(demo, settings):
    settings.GPUCONFIG_CONTAINER_RUNTIME = f"{__name__}.AnsweringRuntime"
    assert get_runtime().name == "answering"


def test_containers_start_as_saved_and_healthy(demo):
    from assignments.selectors import planning_input

    for d in planning_input().services:
        state = demo.inspect(d.name)
        assert state.status == "running" and state.health == "healthy"
        assert state.device_ids == ((str(d.current_gpu),) if d.current_gpu is not None else ())
    assert live_cached()["runtime"] == "simulated"


def test_a_recreate_that_fits_is_healthy(demo):
    steps = []
    result = demo.recreate(
        "ai-enrichment",
        device_ids=("1",),
        budget_gb=3.5,
        progress=lambda step, message: steps.append(str(step)),
    )
    assert result.outcome == Outcome.HEALTHY
    assert steps == ["stopping", "recreating", "starting", "waiting_health", "healthy"]
    state = demo.inspect("ai-enrichment")
    assert (state.device_ids, state.budget_gb, state.health) == (("1",), 3.5, "healthy")


def test_a_recreate_that_overfills_its_gpu_is_rolled_back(demo):
    before = demo.inspect("ai-llm")
    result = demo.recreate(
        "ai-llm", device_ids=("1",), budget_gb=None, progress=lambda step, message: None
    )
    assert result.outcome == Outcome.ROLLED_BACK
    assert "out of memory on GPU 1" in result.message
    after = demo.inspect("ai-llm")
    assert (after.id, after.device_ids, after.status) == (before.id, before.device_ids, "running")


@pytest.mark.parametrize(
    ("status", "health", "expected"),
    [
        (None, None, "unknown"),
        ("running", None, "none"),
        ("running", "healthy", "healthy"),
        ("running", "starting", "starting"),
        ("exited", "unhealthy", "unhealthy"),
        ("running", "weird", "unknown"),
    ],
)
def test_health_is_one_of_five_words(status, health, expected):
    assert health_of(status, health) == expected


def test_page_renders_ask_no_engine_while_the_stored_state_is_fresh(
    reference_inventory, staff_user, client, monkeypatch
):
    from applies import runtime
    from applies.live import live_refresh

    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    live_refresh()

    def no_engine_calls(*args, **kwargs):
        raise AssertionError("a page render asked the container engine")

    monkeypatch.setattr(runtime, "get_runtime", no_engine_calls)
    client.force_login(staff_user)
    for url in ("/settings/gpu/", "/settings/gpu/services/", "/settings/gpu/apply/progress/"):
        assert client.get(url).status_code == 200, url
