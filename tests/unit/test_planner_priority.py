"""Priority when memory is short: once budgets are lowered as far as they go, the services of
lowest priority on a GPU that is still over-committed are left unplaced, each with an
``unplaced_for_priority`` warning; higher priorities keep their place, and services without
a priority are planned as they always were."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assignments.planner import GpuView, ServiceDemand, ServiceRule, plan
from assignments.planner.checks import overflow_mb

AUTOMATIC = ("vram_based", "latency_optimized", "isolation_first", "balanced")
SEARCH = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

A5500 = GpuView(0, "GPU-0", "NVIDIA RTX A5500", 8192)


def unplaced(result) -> list:
    return [i for i in result.issues if i.code == "unplaced_for_priority"]


def enrich(**kwargs) -> ServiceDemand:
    """An adjustable service that cannot go below 2.5 GB."""
    fields = dict(budget_adjustable=True, default_budget_gb=3.0, min_budget_gb=2.5)
    return ServiceDemand("enrich", 3072, **(fields | kwargs))


def test_the_lowest_priority_is_left_unplaced_with_a_warning_naming_it_the_gpu_and_the_fix():
    services = [ServiceDemand("llm", 5000), ServiceDemand("det", 2000), enrich()]
    rules = [ServiceRule("llm", priority=5), ServiceRule("det", priority=2)]
    result = plan("vram_based", [A5500], services, rules)
    assert [p.gpu_index for p in result.placements] == [0, 0, None]
    (issue,) = unplaced(result)
    assert (issue.service, issue.gpu_index, issue.severity) == ("enrich", 0, "warning")
    assert "enrich is left unplaced" in issue.message
    assert "GPU 0 (RTX A5500)" in issue.message
    assert "llm, det" in issue.message
    assert "if its priority is raised to 5" in issue.message
    assert issue.needed_mb == 3072 and issue.available_mb == 8192 - 7000
    assert "free 1.9 GB on GPU 0 (RTX A5500)" in issue.remedies
    # Reported once: not also as unassigned, and the GPU is no longer over capacity.
    assert not [i for i in result.issues if i.code in {"unassigned", "over_capacity"}]


def test_the_same_services_without_priorities_stay_placed_and_over_capacity():
    services = [ServiceDemand("llm", 5000), ServiceDemand("det", 2000), enrich()]
    for rules in ([], [ServiceRule("det", never_with=("nobody",))]):
        result = plan("vram_based", [A5500], services, rules)
        assert [p.gpu_index for p in result.placements] == [0, 0, 0]
        assert not unplaced(result)
        assert [i.code for i in result.issues] == ["over_capacity"]


def test_budgets_are_lowered_before_any_service_is_left_unplaced():
    services = [ServiceDemand("llm", 5000), enrich(default_budget_gb=4.0, min_budget_gb=2.0)]
    result = plan("vram_based", [A5500], services, [ServiceRule("llm", priority=5)])
    assert [p.gpu_index for p in result.placements] == [0, 0]
    assert not unplaced(result)
    assert result.budget_of("enrich") < 4.0


def test_a_higher_priority_keeps_its_place_whatever_the_input_order():
    services = [enrich(), ServiceDemand("det", 2000), ServiceDemand("llm", 5000)]
    rules = [ServiceRule("enrich", priority=9), ServiceRule("llm", priority=4)]
    result = plan("balanced", [A5500], services, rules)
    assert result.gpu_of("det") is None
    assert result.gpu_of("enrich") == 0 and result.gpu_of("llm") == 0
    assert [i.service for i in unplaced(result)] == ["det"]


def test_only_as_many_services_give_way_as_the_gpu_needs():
    # Equal priorities: the later ("tiny") is taken off first, which is not enough, then
    # "big"; with "big" off, "tiny" fits again and is put back.
    services = [
        ServiceDemand("llm", 5500),
        ServiceDemand("big", 3000),
        ServiceDemand("tiny", 500),
    ]
    result = plan("vram_based", [A5500], services, [ServiceRule("llm", priority=3)])
    assert [p.gpu_index for p in result.placements] == [0, None, 0]
    assert [i.service for i in unplaced(result)] == ["big"]


def test_a_lower_priority_is_never_put_back_over_a_higher_one_left_off():
    # "big" (priority 1) cannot come back; "tiny" (priority 0) would fit but stays off too.
    services = [
        ServiceDemand("llm", 6000),
        ServiceDemand("big", 3000),
        ServiceDemand("tiny", 500),
    ]
    rules = [ServiceRule("llm", priority=3), ServiceRule("big", priority=1)]
    result = plan("vram_based", [A5500], services, rules)
    assert [p.gpu_index for p in result.placements] == [0, None, None]
    assert sorted(i.service for i in unplaced(result)) == ["big", "tiny"]


def test_a_pinned_service_left_unplaced_is_not_also_reported_as_breaking_its_pin():
    services = [ServiceDemand("llm", 6000), ServiceDemand("det", 3000)]
    rules = [ServiceRule("llm", priority=2), ServiceRule("det", pin_gpu_uuid="GPU-0")]
    result = plan("isolation_first", [A5500], services, rules)
    assert result.gpu_of("det") is None
    assert [i.code for i in result.issues] == ["unplaced_for_priority"]


@st.composite
def instances(draw):
    count = draw(st.integers(1, 3))
    gpus = [
        GpuView(
            index=i,
            uuid=f"GPU-{i}",
            name=f"NVIDIA Test {i}",
            total_mb=draw(st.sampled_from([4094, 8192, 12288])),
            foreign_used_mb=draw(st.sampled_from([0, 0, 512])),
            available=draw(st.booleans() | st.just(True)),
        )
        for i in range(count)
    ]
    names = [f"svc-{i}" for i in range(draw(st.integers(1, 6)))]
    services = [
        ServiceDemand(
            name=name,
            need_mb=draw(st.integers(256, 9000)),
            latency_critical=draw(st.booleans()),
            isolated=draw(st.booleans()),
            budget_adjustable=(adjustable := draw(st.booleans())),
            default_budget_gb=draw(st.sampled_from([2.0, 4.0, 6.0])) if adjustable else None,
            min_budget_gb=draw(st.sampled_from([None, 1.0, 1.5])) if adjustable else None,
        )
        for name in names
    ]
    rules = [
        ServiceRule(
            service=name,
            never_with=tuple(draw(st.lists(st.sampled_from(names), max_size=1))),
            priority=draw(st.integers(0, 4)),
        )
        for name in names
        if draw(st.booleans())
    ]
    return gpus, services, rules


@SEARCH
@given(instances())
def test_a_service_left_unplaced_never_outranks_one_placed_on_the_gpu_it_was_taken_off(instance):
    gpus, services, rules = instance
    priority = {r.service: r.priority for r in rules}
    for strategy in AUTOMATIC:
        result = plan(strategy, gpus, services, rules)
        for issue in unplaced(result):
            assert result.gpu_of(issue.service) is None
            placed_there = [p.service for p in result.placements if p.gpu_index == issue.gpu_index]
            assert placed_there, (strategy, issue.message)
            lowest = min(priority.get(name, 0) for name in placed_there)
            assert priority.get(issue.service, 0) < max(
                priority.get(name, 0) for name in placed_there
            )
            assert priority.get(issue.service, 0) <= lowest, (strategy, result.placements)


@SEARCH
@given(instances())
def test_no_service_is_left_unplaced_when_everything_fits(instance):
    """Priorities only choose who gives way: where the plan made without them fits, the plan
    made with them leaves every service placed, where the one without placed it."""
    gpus, services, rules = instance
    rules = [replace(r, never_with=()) for r in rules]  # priorities alone: the same placements
    without = [replace(r, priority=0) for r in rules]
    for strategy in AUTOMATIC:
        free = plan(strategy, gpus, services, without)
        if overflow_mb(gpus, services, free.placements) > 0:
            continue
        result = plan(strategy, gpus, services, rules)
        assert not unplaced(result), (strategy, result.warnings)
        assert [p.gpu_index for p in result.placements] == [p.gpu_index for p in free.placements]


@SEARCH
@given(instances())
def test_services_of_equal_priority_on_a_gpu_never_give_way_to_each_other(instance):
    """Every service with the same priority: planned exactly as with no rules at all."""
    gpus, services, _ = instance
    same = [ServiceRule(s.name, priority=3) for s in services]
    for strategy in AUTOMATIC:
        assert plan(strategy, gpus, services, same) == plan(strategy, gpus, services)
