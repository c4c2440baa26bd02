"""What an apply recreates and in which order: the pure rules of ``applies.applying``.

No engine: a runtime written to the ``ContainerRuntime`` contract answers ``inspect`` from a
dictionary.
"""

from __future__ import annotations

import pytest

from applies.applying import Change, Target, dependencies, diff, differs, freed_gpus_needed
from applies.runtime.base import ContainerRuntime, ContainerState


def state(devices, budget=None, name="svc") -> ContainerState:
    return ContainerState(f"id-{name}", name, "running", "healthy", tuple(devices), budget)


class Containers(ContainerRuntime):
    """Answers ``inspect`` from ``states``; a service not in it has no container."""

    def __init__(self, states: dict[str, ContainerState]) -> None:
        super().__init__()
        self.states = states
        self.asked: list[str] = []

    def inspect(self, service):
        self.asked.append(service)
        return self.states.get(service)


def move(service, current, target, *, recreate=True) -> Change:
    return Change(
        service, state(current, name=service), Target(service, tuple(target), None), recreate
    )


# differs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("devices", "budget", "target_devices", "target_budget", "expected"),
    [
        (("0",), None, ("0",), None, False),
        (("0", "1"), None, ("1", "0"), None, False),  # the order of device ids does not matter
        (("0",), None, ("1",), None, True),
        (("0",), None, ("0", "1"), None, True),
        ((), None, ("0",), None, True),
        (("0",), 6.8, ("0",), 6.8, False),
        (("0",), 6.8, ("0",), 6.8000001, False),  # budgets compare to the thousandth
        (("0",), 6.8004, ("0",), 6.8, False),
        (("0",), 6.8, ("0",), 6.8004, False),
        (("0",), 6.8, ("0",), 6.801, True),
        (("0",), 6.8, ("0",), 3.5, True),
        (("0",), None, ("0",), 3.5, True),  # a budget appears
        (("0",), 3.5, ("0",), None, True),  # a budget goes away
    ],
)
def test_a_container_differs_when_its_devices_or_its_budget_differ(
    devices, budget, target_devices, target_budget, expected
):
    assert differs(state(devices, budget), Target("svc", target_devices, target_budget)) is expected


# diff -------------------------------------------------------------------------------------------


def test_diff_compares_each_target_with_its_container_in_the_order_given():
    runtime = Containers({"a": state(["0"], name="a"), "b": state(["1"], 6.8, name="b")})
    targets = [Target("b", ("1",), 3.5), Target("a", ("0",), None), Target("gone", ("0",), None)]
    changes = diff(runtime, targets)
    assert runtime.asked == ["b", "a", "gone"]
    assert [c.service for c in changes] == ["b", "a", "gone"]
    assert [c.target for c in changes] == targets
    assert [c.current for c in changes] == [runtime.states["b"], runtime.states["a"], None]
    assert [c.needs_recreate for c in changes] == [True, False, False]
    assert [c.missing for c in changes] == [False, False, True]


# freed_gpus_needed ------------------------------------------------------------------------------


def test_a_service_moving_onto_a_gpu_needs_the_service_leaving_it():
    assert freed_gpus_needed(move("a", ["0"], ["1"]), move("b", ["1"], ["2"])) == ["1"]


def test_no_dependency_when_the_other_service_stays_on_the_gpu_or_never_held_it():
    assert freed_gpus_needed(move("a", ["0"], ["1"]), move("b", ["1"], ["1", "2"])) == []
    assert freed_gpus_needed(move("a", ["0"], ["1"]), move("b", ["2"], ["3"])) == []
    # Already on the GPU: nothing to wait for.
    assert freed_gpus_needed(move("a", ["1"], ["1", "0"]), move("b", ["1"], ["2"])) == []


def test_every_freed_gpu_is_named_in_order():
    arriving = move("a", ["0"], ["3", "1", "2"])
    leaving = move("b", ["1", "2", "3"], ["0"])
    assert freed_gpus_needed(arriving, leaving) == ["1", "2", "3"]


def test_a_missing_container_is_no_dependency_either_way():
    missing = Change("m", None, Target("m", ("1",), None), False)
    assert freed_gpus_needed(missing, move("b", ["1"], ["2"])) == []
    assert freed_gpus_needed(move("a", ["0"], ["1"]), missing) == []


def test_all_devices_stands_for_every_gpu_including_unnamed_ones():
    # Leaving "all" for GPU 0 frees GPU 1 and every GPU neither side names ("*").
    assert freed_gpus_needed(move("a", ["0"], ["all"]), move("b", ["all"], ["0"])) == ["*"]
    assert freed_gpus_needed(move("a", ["0"], ["1"]), move("b", ["all"], ["0"])) == ["1"]
    assert freed_gpus_needed(move("a", ["all"], ["1"]), move("b", ["1"], ["2"])) == []


def test_the_unnamed_gpu_marker_never_clashes_with_a_real_device_id():
    assert freed_gpus_needed(move("a", ["0"], ["all"]), move("b", ["all", "*"], ["0"])) == [
        "*",
        "**",
    ]


# dependencies -----------------------------------------------------------------------------------


def test_only_services_to_recreate_wait_and_are_waited_for():
    changes = [
        move("a", ["0"], ["1"]),
        move("b", ["1"], ["2"]),
        move("idle", ["2"], ["0"], recreate=False),
    ]
    assert dependencies(changes) == {"a": {"b": ["1"]}, "b": {}}


def test_a_swap_makes_each_wait_for_the_other():
    changes = [move("a", ["0"], ["1"]), move("b", ["1"], ["0"])]
    assert dependencies(changes) == {"a": {"b": ["1"]}, "b": {"a": ["0"]}}


def test_a_service_never_waits_for_itself():
    assert dependencies([move("a", ["0", "1"], ["1", "2"])]) == {"a": {}}
