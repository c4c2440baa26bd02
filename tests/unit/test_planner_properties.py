"""Properties every plan has, checked on random inventories with hypothesis.

Plans are deterministic, place every service exactly once, use only available GPUs when a
strategy decides, and the balanced strategy finds the true optimum of a small exhaustive search.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assignments.planner import (
    GpuView,
    Placement,
    ServiceDemand,
    check,
    free_mb,
    overflow_mb,
    plan,
    strategy_names,
    suggest_budget_gb,
)

AUTOMATIC = ("vram_based", "latency_optimized", "isolation_first", "balanced")
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEARCH = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def gpu_lists(draw, min_size=1, max_size=4, all_available=False):
    count = draw(st.integers(min_size, max_size))
    indices = sorted(draw(st.sets(st.integers(0, 7), min_size=count, max_size=count)))
    gpus = []
    for index in indices:
        total = draw(
            st.sampled_from([2048, 4094, 6144, 8192, 12288, 16384, 24564])
            | st.integers(1024, 49152)
        )
        gpus.append(
            GpuView(
                index=index,
                uuid=f"GPU-{index}",
                name=f"NVIDIA Test {index}",
                total_mb=total,
                foreign_used_mb=draw(st.sampled_from([0, 0, 0, 256]) | st.integers(0, total)),
                compute_capability=draw(st.sampled_from([(7, 5), (8, 6), (8, 9), (9, 0)])),
                available=True if all_available else draw(st.booleans() | st.just(True)),
            )
        )
    return gpus


@st.composite
def service_lists(draw, min_size=0, max_size=8, gpu_indices=range(8), adjustable=True):
    """Services; ``adjustable=False`` gives none whose budget the planner could lower."""
    count = draw(st.integers(min_size, max_size))
    services = []
    for i in range(count):
        can_adjust = adjustable and draw(st.booleans())
        services.append(
            ServiceDemand(
                name=f"svc-{i}",
                need_mb=draw(st.integers(0, 12000)),
                latency_critical=draw(st.booleans()),
                isolated=draw(st.booleans()) and draw(st.booleans()),
                budget_adjustable=can_adjust,
                default_budget_gb=draw(st.integers(1, 120)) / 10 if can_adjust else None,
                min_budget_gb=draw(st.none() | st.integers(1, 40).map(lambda t: t / 10))
                if can_adjust
                else None,
                current_gpu=draw(st.none() | st.sampled_from(list(gpu_indices))),
                budget_gb=(
                    draw(st.none() | st.integers(1, 120).map(lambda t: t / 10))
                    if can_adjust
                    else None
                ),
            )
        )
    return services


# Every strategy -------------------------------------------------------------------------------


@FAST
@given(gpus=gpu_lists(), services=service_lists())
def test_every_plan_is_deterministic(gpus, services):
    for name in strategy_names():
        first = plan(name, gpus, services)
        assert plan(name, list(gpus), list(services)) == first
        assert plan(name, tuple(reversed(gpus)), services).placements == first.placements


@FAST
@given(gpus=gpu_lists(min_size=0), services=service_lists())
def test_every_plan_places_each_service_exactly_once_in_input_order(gpus, services):
    for name in strategy_names():
        result = plan(name, gpus, services)
        assert [p.service for p in result.placements] == [s.name for s in services]


@FAST
@given(gpus=gpu_lists(min_size=0), services=service_lists())
def test_automatic_strategies_place_everything_on_available_gpus_only(gpus, services):
    available = {g.index for g in gpus if g.available}
    for name in AUTOMATIC:
        placed = [p.gpu_index for p in plan(name, gpus, services).placements]
        if available:
            assert all(index in available for index in placed), name
        else:
            assert placed == [None] * len(services), name


@FAST
@given(gpus=gpu_lists(), services=service_lists())
def test_a_plan_warns_about_exactly_the_over_committed_gpus(gpus, services):
    for name in strategy_names():
        result = plan(name, gpus, services)
        free = free_mb(gpus, services, result.placements)
        flagged = {i.gpu_index for i in result.issues if i.code == "over_capacity"}
        occupied = {p.gpu_index for p in result.placements}
        expected = {
            g.index for g in gpus if g.available and g.index in occupied and free[g.index] < 0
        }
        assert flagged == expected
        assert result.issues[
            len(result.issues) - len(check(gpus, services, result.placements)) :
        ] == check(gpus, services, result.placements)


# Budgets in automatic plans ------------------------------------------------------------------


def _fixed(services):
    """The same needs, with budgets the planner may not lower."""
    return [replace(s, budget_adjustable=False, need_mb=s.effective_mb) for s in services]


@FAST
@given(gpus=gpu_lists(), services=service_lists())
def test_automatic_plans_lower_budgets_only_to_fit_and_never_below_the_minimum(gpus, services):
    by_name = {s.name: s for s in services}
    for name in AUTOMATIC:
        result = plan(name, gpus, services)
        fixed = plan(name, gpus, _fixed(services))
        # Never more over-committed than without lowering a budget; untouched when that fits.
        assert overflow_mb(gpus, services, result.placements) <= overflow_mb(
            gpus, services, fixed.placements
        )
        notices = [i for i in result.issues if i.code == "budget_auto_adjusted"]
        if overflow_mb(gpus, services, fixed.placements) == 0:
            assert notices == []
            assert [p.gpu_index for p in result.placements] == [
                p.gpu_index for p in fixed.placements
            ]
        free = free_mb(gpus, services, result.placements)
        adjusted = {i.service for i in notices}
        for placement in result.placements:
            service = by_name[placement.service]
            own = service.budget_gb if service.budget_adjustable else None
            assert (placement.budget_gb != own) == (placement.service in adjusted)
        for notice in notices:
            service = by_name[notice.service]
            assert notice.severity == "info"
            assert result.budget_of(notice.service) == notice.suggested_budget_gb
            assert notice.suggested_budget_gb >= (service.min_budget_gb or 0.1) - 1e-9
            assert notice.suggested_budget_gb * 1024 < notice.needed_mb
            assert result.gpu_of(notice.service) == notice.gpu_index
            assert free[notice.gpu_index] >= 0


# Latency-optimized ----------------------------------------------------------------------------


def _fastest(gpus):
    return min(
        (g for g in gpus if g.available and g.total_mb > 0),
        key=lambda g: (tuple(-c for c in g.compute_capability), -g.total_mb, g.index),
    )


@FAST
@given(gpus=gpu_lists(min_size=2), services=service_lists(adjustable=False))
def test_latency_optimized_keeps_other_services_off_the_fastest_gpu_when_they_fit(gpus, services):
    usable = [g for g in gpus if g.available and g.total_mb > 0]
    if not usable:
        return
    fast = _fastest(gpus).index
    result = plan("latency_optimized", gpus, services)
    free = free_mb(usable, services, result.placements)
    for service, placement in zip(services, result.placements):
        if placement.gpu_index == fast and not service.latency_critical:
            # It went to the fastest GPU only because no other GPU had room for it.
            assert all(service.effective_mb > free[g.index] for g in usable if g.index != fast)
        if placement.gpu_index != fast and service.latency_critical:
            assert service.effective_mb > free[fast]


# Budget suggestions ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(512, 49152),
    foreign=st.integers(0, 4096),
    other=st.integers(0, 8192),
    default_tenths=st.integers(1, 200),
)
def test_a_suggested_budget_fits_with_its_headroom_up_to_rounding(
    total, foreign, other, default_tenths
):
    target = ServiceDemand(
        "adjustable", 999999, budget_adjustable=True, default_budget_gb=default_tenths / 10
    )
    neighbour = ServiceDemand("neighbour", other)
    gpu = GpuView(0, "GPU-0", "NVIDIA Test", total, foreign)
    placements = [Placement("adjustable", 0), Placement("neighbour", 0)]
    suggestion = suggest_budget_gb(gpu, [target, neighbour], placements, target)
    room = total - foreign - other
    if suggestion is None:
        assert room - 512 < 0.05 * 1024
        return
    assert suggestion >= 0.1
    assert suggestion <= default_tenths / 10
    assert round(suggestion * 10) == suggestion * 10
    assert suggestion * 1024 <= room - 512 + 0.05 * 1024 + 1e-6
    assert suggestion * 1024 < room
    # Nothing closer to the headroom limit was passed over (unless the default caps it).
    assert suggestion == default_tenths / 10 or (suggestion + 0.1) * 1024 > room - 512 + 51.2


# Balanced is exact ----------------------------------------------------------------------------


def _planning_order(services):
    return sorted(range(len(services)), key=lambda i: (-services[i].effective_mb, i))


def _objective(gpus, services, assignment):
    """(total overflow, exact variance of utilisation fractions) of one assignment."""
    loads = {g.index: g.foreign_used_mb for g in gpus}
    for service, index in zip(services, assignment):
        loads[index] += service.effective_mb
    overflow = sum(max(0, loads[g.index] - g.total_mb) for g in gpus)
    fractions = [Fraction(loads[g.index], g.total_mb) for g in gpus]
    mean = sum(fractions) / len(fractions)
    return overflow, sum((f - mean) ** 2 for f in fractions) / len(fractions)


def _exhaustive_balanced(gpus, services):
    """Every assignment tried: least overflow, then least variance, then the smallest vector
    of GPU indices in planning order."""
    usable = [g for g in gpus if g.available]
    order = _planning_order(services)
    scale = math.lcm(*(g.total_mb for g in usable))
    weight = {g.index: scale // g.total_mb for g in usable}
    best = None
    for assignment in itertools.product([g.index for g in usable], repeat=len(services)):
        loads = {g.index: g.foreign_used_mb for g in usable}
        for service, index in zip(services, assignment):
            loads[index] += service.effective_mb
        overflow = sum(max(0, loads[g.index] - g.total_mb) for g in usable)
        scaled = [loads[i] * weight[i] for i in loads]
        spread = len(scaled) * sum(x * x for x in scaled) - sum(scaled) ** 2
        key = (overflow, spread, tuple(assignment[i] for i in order))
        if best is None or key < best[0]:
            best = (key, assignment)
    return best[1]


@SEARCH
@given(
    gpus=gpu_lists(min_size=1, max_size=3, all_available=True),
    services=service_lists(min_size=1, max_size=8, adjustable=False),
)
def test_balanced_finds_the_exhaustive_optimum(gpus, services):
    result = plan("balanced", gpus, services)
    found = tuple(p.gpu_index for p in result.placements)
    expected = _exhaustive_balanced(gpus, services)
    assert _objective(gpus, services, found) == _objective(gpus, services, expected)
    assert found == expected


@SEARCH
@given(
    gpus=gpu_lists(min_size=2, max_size=3, all_available=True),
    needs=st.lists(st.sampled_from([512, 1024, 1536, 2048, 3072, 4096]), min_size=2, max_size=8),
)
def test_balanced_finds_the_optimum_among_many_equal_services_and_gpus(gpus, needs):
    gpus = [
        GpuView(g.index, g.uuid, g.name, gpus[0].total_mb, gpus[0].foreign_used_mb) for g in gpus
    ]
    services = [ServiceDemand(f"svc-{i}", need) for i, need in enumerate(needs)]
    result = plan("balanced", gpus, services)
    assert tuple(p.gpu_index for p in result.placements) == _exhaustive_balanced(gpus, services)


@SEARCH
@given(
    gpus=gpu_lists(min_size=2, max_size=4, all_available=True),
    services=service_lists(min_size=1, max_size=6),
)
def test_balanced_ignores_unavailable_gpus_in_its_objective(gpus, services):
    lost = GpuView(9, "GPU-9", "NVIDIA Lost", 1024, 0, available=False)
    assert (
        plan("balanced", [*gpus, lost], services).placements
        == plan("balanced", gpus, services).placements
    )


@SEARCH
@given(
    gpus=gpu_lists(min_size=4, max_size=4, all_available=True),
    services=service_lists(min_size=1, max_size=6, adjustable=False),
)
def test_balanced_finds_the_exhaustive_optimum_on_four_gpus(gpus, services):
    result = plan("balanced", gpus, services)
    assert tuple(p.gpu_index for p in result.placements) == _exhaustive_balanced(gpus, services)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gpus=gpu_lists(min_size=2, max_size=8), services=service_lists(min_size=13, max_size=40))
def test_large_plans_are_deterministic_and_complete(gpus, services):
    for name in AUTOMATIC:
        first = plan(name, gpus, services)
        assert plan(name, gpus, services) == first
        assert [p.service for p in first.placements] == [s.name for s in services]
        available = {g.index for g in gpus if g.available}
        assert all(p.gpu_index in available for p in first.placements) or not available


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    gpus=gpu_lists(min_size=2, max_size=6, all_available=True),
    services=service_lists(min_size=13, max_size=30, adjustable=False),
)
def test_balanced_beyond_the_exact_size_is_no_worse_than_vram_based(gpus, services):
    def score(result):
        return _objective(gpus, services, [p.gpu_index for p in result.placements])

    assert score(plan("balanced", gpus, services)) <= score(plan("vram_based", gpus, services))
