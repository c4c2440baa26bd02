"""The planner's rules, one strategy at a time, its warnings and its helpers.

Plain Python: no Django, no database. The reference hardware is an RTX A5500 (24 GB) and an
RTX A400 (4 GB) with the five AI services of the user guide.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from assignments.planner import (
    STRATEGIES,
    GpuView,
    Placement,
    ServiceDemand,
    Strategy,
    UnknownStrategy,
    check,
    fallback_gpu,
    free_mb,
    overflow_move,
    plan,
    register,
    strategy_names,
    suggest_budget_gb,
)
from assignments.planner.registry import BUDGET_NOTE
from assignments.planner.strategies import balanced as balanced_module

A5500 = GpuView(
    index=0,
    uuid="GPU-a5500",
    name="NVIDIA RTX A5500",
    total_mb=24564,
    foreign_used_mb=0,
    compute_capability=(8, 6),
)
A400 = GpuView(
    index=1,
    uuid="GPU-a400",
    name="NVIDIA RTX A400",
    total_mb=4094,
    foreign_used_mb=0,
    compute_capability=(8, 6),
)

LLM = ServiceDemand("ai-llm", 22221, latency_critical=True, isolated=True)
YOLO = ServiceDemand("ai-yolo26", 666, latency_critical=True)
FLORENCE = ServiceDemand("ai-florence", 1536)
CLIP = ServiceDemand("ai-clip", 1229)
ENRICHMENT = ServiceDemand(
    "ai-enrichment", 6963, budget_adjustable=True, default_budget_gb=6.8, min_budget_gb=2.0
)

REFERENCE_GPUS = (A5500, A400)
REFERENCE_SERVICES = (LLM, YOLO, FLORENCE, CLIP, ENRICHMENT)
AUTOMATIC = ("vram_based", "latency_optimized", "isolation_first", "balanced")

GB = 1024


def gpu(
    index: int,
    total_mb: int,
    *,
    foreign: int = 0,
    cc: tuple[int, int] = (8, 6),
    available: bool = True,
) -> GpuView:
    return GpuView(
        index=index,
        uuid=f"GPU-{index}",
        name=f"NVIDIA Test {index}",
        total_mb=total_mb,
        foreign_used_mb=foreign,
        compute_capability=cc,
        available=available,
    )


def svc(name: str, need_mb: int, **flags) -> ServiceDemand:
    return ServiceDemand(name, need_mb, **flags)


def on(services, *gpu_indices: int | None) -> list[Placement]:
    """Placements putting ``services[i]`` on ``gpu_indices[i]``."""
    return [
        Placement(s.name, index, s.budget_gb if s.budget_adjustable else None)
        for s, index in zip(services, gpu_indices, strict=True)
    ]


def fixed_budget(services):
    """The same services and needs, with budgets that cannot be lowered."""
    return [replace(s, budget_adjustable=False, need_mb=s.effective_mb) for s in services]


def where(result) -> dict[str, int | None]:
    return {p.service: p.gpu_index for p in result.placements}


def codes(issues) -> list[str]:
    return [issue.code for issue in issues]


def only(issues, code: str):
    found = [issue for issue in issues if issue.code == code]
    assert len(found) == 1, issues
    return found[0]


# The registry ---------------------------------------------------------------------------------


def test_strategies_are_registered_in_the_order_users_see_them():
    assert strategy_names() == [
        "manual",
        "vram_based",
        "latency_optimized",
        "isolation_first",
        "balanced",
    ]
    assert list(STRATEGIES) == strategy_names()
    assert [s.label for s in STRATEGIES.values()] == [
        "Manual",
        "VRAM-Based (Recommended)",
        "Latency-Optimized",
        "Isolation-First",
        "Balanced",
    ]


def test_every_strategy_has_a_one_line_description_and_a_function():
    for name, strategy in STRATEGIES.items():
        assert isinstance(strategy, Strategy)
        assert strategy.name == name
        assert strategy.description and "\n" not in strategy.description
        assert strategy.description.endswith(".")
        assert callable(strategy.func)


def test_every_automatic_strategy_says_it_lowers_budgets_and_manual_does_not():
    assert [s.name for s in STRATEGIES.values() if not s.automatic] == ["manual"]
    for strategy in STRATEGIES.values():
        assert strategy.description.endswith(BUDGET_NOTE) == strategy.automatic


def test_an_unknown_strategy_is_rejected_as_a_value_error():
    with pytest.raises(UnknownStrategy, match="nonsense"):
        plan("nonsense", REFERENCE_GPUS, REFERENCE_SERVICES)
    assert issubclass(UnknownStrategy, ValueError)


def test_a_strategy_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already registered"):
        register("manual", label="Again", description="Again.")(lambda gpus, services: None)
    assert STRATEGIES["manual"].label == "Manual"


def test_plan_refuses_two_services_with_the_same_name():
    with pytest.raises(ValueError, match="unique"):
        plan("vram_based", REFERENCE_GPUS, [CLIP, CLIP])


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_strategy_returns_one_placement_per_service_in_input_order(strategy):
    result = plan(strategy, REFERENCE_GPUS, REFERENCE_SERVICES)
    assert result.strategy == strategy
    assert [p.service for p in result.placements] == [s.name for s in REFERENCE_SERVICES]


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_strategy_plans_nothing_for_no_services(strategy):
    assert plan(strategy, REFERENCE_GPUS, []).placements == ()


# Manual ---------------------------------------------------------------------------------------


def test_manual_keeps_each_services_current_gpu():
    services = [
        replace(LLM, current_gpu=1),
        replace(CLIP, current_gpu=0),
        replace(ENRICHMENT, current_gpu=0),
    ]
    assert where(plan("manual", REFERENCE_GPUS, services)) == {
        "ai-llm": 1,
        "ai-clip": 0,
        "ai-enrichment": 0,
    }


def test_manual_leaves_a_service_without_a_gpu_unplaced_and_says_so():
    services = [replace(LLM, current_gpu=0), CLIP]
    result = plan("manual", REFERENCE_GPUS, services)
    assert result.gpu_of("ai-clip") is None
    issue = only(result.issues, "unassigned")
    assert issue.service == "ai-clip"
    assert issue.message == "ai-clip has no GPU assigned."


def test_manual_keeps_a_placement_on_a_lost_gpu_and_reports_it():
    lost = replace(A400, available=False)
    services = [replace(CLIP, current_gpu=1), replace(YOLO, current_gpu=3)]
    result = plan("manual", [A5500, lost], services)
    assert where(result) == {"ai-clip": 1, "ai-yolo26": 3}
    missing = [i for i in result.issues if i.code == "gpu_missing"]
    assert [(i.service, i.gpu_index) for i in missing] == [("ai-clip", 1), ("ai-yolo26", 3)]
    assert missing[0].message == "ai-clip is assigned to GPU 1 (RTX A400), which is not available."
    assert missing[1].message == "ai-yolo26 is assigned to GPU 3, which is not present."


def test_manual_keeps_the_budget_override_on_the_placement():
    services = [replace(ENRICHMENT, current_gpu=1, budget_gb=3.5), replace(CLIP, current_gpu=0)]
    placements = plan("manual", REFERENCE_GPUS, services).placements
    assert placements[0].budget_gb == 3.5
    assert placements[1].budget_gb is None


# VRAM-based -----------------------------------------------------------------------------------


def test_vram_based_puts_the_largest_services_first_on_the_gpu_with_most_free_vram():
    # ai-llm (21.7 GB) takes GPU 0, leaving 2.3 GB there; ai-enrichment goes to the 4 GB GPU;
    # the rest follow whichever GPU has the most left. (A fixed budget: nothing is lowered.)
    fixed = fixed_budget(REFERENCE_SERVICES)
    assert where(plan("vram_based", REFERENCE_GPUS, fixed)) == {
        "ai-llm": 0,
        "ai-enrichment": 1,
        "ai-florence": 0,
        "ai-clip": 0,
        "ai-yolo26": 0,
    }


def test_vram_based_counts_what_it_already_placed_as_used():
    gpus = [gpu(0, 8 * GB), gpu(1, 8 * GB)]
    services = [svc("a", 3 * GB), svc("b", 3 * GB), svc("c", 2 * GB), svc("d", 2 * GB)]
    assert where(plan("vram_based", gpus, services)) == {"a": 0, "b": 1, "c": 0, "d": 1}


def test_vram_based_breaks_ties_towards_the_lower_gpu_index():
    gpus = [gpu(3, 8 * GB), gpu(1, 8 * GB)]
    assert where(plan("vram_based", gpus, [svc("a", GB)])) == {"a": 1}


def test_vram_based_counts_vram_held_by_other_processes_as_used():
    gpus = [gpu(0, 16 * GB, foreign=12 * GB), gpu(1, 8 * GB)]
    assert where(plan("vram_based", gpus, [svc("a", 2 * GB)])) == {"a": 1}


def test_vram_based_honours_a_budget_override():
    small = replace(ENRICHMENT, budget_gb=1.0)
    gpus = [gpu(0, 8 * GB), gpu(1, 8 * GB)]
    result = plan("vram_based", gpus, [svc("big", 2 * GB), small, svc("mid", 1536)])
    # Needs: big 2048, mid 1536, enrichment 1024 → big:0, mid:1, enrichment:1 (6.5 GB free vs 6).
    assert where(result) == {"big": 0, "mid": 1, "ai-enrichment": 1}


@pytest.mark.parametrize("strategy", AUTOMATIC)
def test_automatic_strategies_never_place_on_an_unavailable_gpu(strategy):
    gpus = [replace(A5500, available=False), A400]
    result = plan(strategy, gpus, REFERENCE_SERVICES)
    assert set(where(result).values()) == {1}


@pytest.mark.parametrize("strategy", AUTOMATIC)
def test_automatic_strategies_leave_everything_unplaced_without_an_available_gpu(strategy):
    gpus = [replace(A5500, available=False)]
    result = plan(strategy, gpus, [CLIP, YOLO])
    assert where(result) == {"ai-clip": None, "ai-yolo26": None}
    assert codes(result.issues) == ["unplaced", "unplaced"]
    assert result.issues[0].message == "ai-clip could not be placed: no GPU is available."


# Latency-optimized ----------------------------------------------------------------------------


def test_latency_optimized_puts_the_latency_critical_services_on_the_fastest_gpu():
    result = plan("latency_optimized", REFERENCE_GPUS, REFERENCE_SERVICES)
    assert result.gpu_of("ai-llm") == 0
    assert result.gpu_of("ai-yolo26") == 0


def test_latency_optimized_finds_the_fastest_gpu_by_compute_capability_first():
    gpus = [gpu(0, 24 * GB, cc=(8, 6)), gpu(1, 12 * GB, cc=(8, 9)), gpu(2, 12 * GB, cc=(8, 9))]
    result = plan("latency_optimized", gpus, [svc("det", GB, latency_critical=True)])
    # Same capability on 1 and 2: most VRAM, then the lower index.
    assert result.gpu_of("det") == 1


def test_latency_optimized_moves_the_other_services_off_the_fastest_gpu_when_they_fit():
    gpus = [gpu(0, 24 * GB), gpu(1, 8 * GB)]
    services = [YOLO, FLORENCE, CLIP]
    assert where(plan("latency_optimized", gpus, services)) == {
        "ai-yolo26": 0,
        "ai-florence": 1,
        "ai-clip": 1,
    }


def test_latency_optimized_uses_the_fastest_gpu_for_others_only_when_nothing_else_fits():
    gpus = [gpu(0, 24 * GB), gpu(1, 4 * GB), gpu(2, 4 * GB)]
    services = [YOLO, svc("big", 6 * GB), svc("small", 3 * GB)]
    assert where(plan("latency_optimized", gpus, services)) == {
        "ai-yolo26": 0,
        "big": 0,
        "small": 1,
    }


def test_latency_optimized_spreads_the_rest_over_the_other_gpus_by_free_vram():
    gpus = [gpu(0, 24 * GB), gpu(1, 8 * GB), gpu(2, 8 * GB)]
    services = [svc("a", 3 * GB), svc("b", 2 * GB), svc("c", 2 * GB)]
    assert where(plan("latency_optimized", gpus, services)) == {"a": 1, "b": 2, "c": 2}


def test_latency_optimized_fills_the_fastest_gpu_largest_first_while_they_fit():
    gpus = [gpu(0, 8 * GB), gpu(1, 8 * GB, cc=(7, 5))]
    services = [
        svc("small", 2 * GB, latency_critical=True),
        svc("large", 5 * GB, latency_critical=True),
        svc("medium", 3 * GB, latency_critical=True),
    ]
    # large (5) fits GPU 0, medium (3) fits exactly, small (2) no longer fits: it goes elsewhere.
    assert where(plan("latency_optimized", gpus, services)) == {"large": 0, "medium": 0, "small": 1}


def test_latency_optimized_puts_everything_on_the_only_gpu():
    result = plan("latency_optimized", [A400], REFERENCE_SERVICES)
    assert set(where(result).values()) == {1}


# Isolation-first ------------------------------------------------------------------------------


def test_isolation_first_gives_the_llm_the_largest_gpu_to_itself():
    result = plan("isolation_first", REFERENCE_GPUS, REFERENCE_SERVICES)
    assert where(result) == {
        "ai-llm": 0,
        "ai-yolo26": 1,
        "ai-florence": 1,
        "ai-clip": 1,
        "ai-enrichment": 1,
    }


def test_isolation_first_spreads_the_others_over_all_remaining_gpus():
    gpus = [gpu(0, 8 * GB), gpu(1, 24 * GB), gpu(2, 8 * GB)]
    services = [LLM, ENRICHMENT, FLORENCE, CLIP, YOLO]
    result = plan("isolation_first", gpus, services)
    assert where(result) == {
        "ai-llm": 1,
        "ai-enrichment": 0,
        "ai-florence": 2,
        "ai-clip": 2,
        "ai-yolo26": 2,
    }


def test_isolation_first_picks_the_lower_index_among_equally_large_gpus():
    gpus = [gpu(0, 24 * GB), gpu(1, 24 * GB)]
    assert where(plan("isolation_first", gpus, [CLIP, LLM])) == {"ai-clip": 1, "ai-llm": 0}


def test_isolation_first_on_one_gpu_shares_it_and_warns():
    result = plan("isolation_first", [A5500], REFERENCE_SERVICES)
    assert set(where(result).values()) == {0}
    issue = only(result.issues, "isolation_impossible")
    assert issue.service == "ai-llm"
    assert issue.message == (
        "Only one GPU is available, so ai-llm cannot have a GPU to itself; "
        "all services share GPU 0 (RTX A5500)."
    )


def test_isolation_first_without_isolated_services_uses_every_gpu():
    gpus = [gpu(0, 24 * GB), gpu(1, 8 * GB)]
    services = [FLORENCE, CLIP]
    assert where(plan("isolation_first", gpus, services)) == where(
        plan("vram_based", gpus, services)
    )


# Balanced -------------------------------------------------------------------------------------


def test_balanced_evens_out_utilisation_fractions_not_megabytes():
    gpus = [gpu(0, 16 * GB), gpu(1, 8 * GB)]
    result = plan("balanced", gpus, [svc("small", 3 * GB), svc("large", 6 * GB)])
    # 6/16 and 3/8 are both 37.5 %.
    assert where(result) == {"small": 1, "large": 0}


def test_balanced_counts_vram_held_by_other_processes():
    gpus = [gpu(0, 8 * GB, foreign=6 * GB), gpu(1, 8 * GB)]
    result = plan("balanced", gpus, [svc("a", 2 * GB), svc("b", 2 * GB)])
    # Both on GPU 1 gives 75 % and 50 %; one on each would give 100 % and 25 %.
    assert where(result) == {"a": 1, "b": 1}


def test_balanced_picks_the_smallest_assignment_among_equally_good_ones():
    gpus = [gpu(0, 8 * GB), gpu(1, 8 * GB)]
    services = [svc("d", 2 * GB), svc("b", 3 * GB), svc("a", 4 * GB), svc("c", 3 * GB)]
    # {4, 2} and {3, 3} balance perfectly; largest first, the 4 GB service gets GPU 0.
    assert where(plan("balanced", gpus, services)) == {"a": 0, "b": 1, "c": 1, "d": 0}


def test_balanced_respects_capacity_before_evenness():
    gpus = [gpu(0, 12 * GB), gpu(1, 4 * GB)]
    services = [svc("a", 6 * GB), svc("b", 5 * GB)]
    # 50 % and 125 % would be more even, but only both on GPU 0 fits.
    result = plan("balanced", gpus, services)
    assert where(result) == {"a": 0, "b": 0}
    assert "over_capacity" not in codes(result.issues)


def test_balanced_minimises_overflow_when_nothing_fits():
    fixed = fixed_budget(REFERENCE_SERVICES)
    result = plan("balanced", REFERENCE_GPUS, fixed)
    loads = {0: 0, 1: 0}
    for service in fixed:
        loads[result.gpu_of(service.name)] += service.effective_mb
    overflow = max(0, loads[0] - A5500.total_mb) + max(0, loads[1] - A400.total_mb)
    assert overflow == sum(s.effective_mb for s in fixed) - 24564 - 4094


def test_balanced_solves_ten_services_on_four_gpus_exactly():
    assert balanced_module._exact_fits(4, 10)
    gpus = [gpu(0, 24 * GB), gpu(1, 12 * GB), gpu(2, 12 * GB), gpu(3, 8 * GB)]
    needs = [7100, 6300, 5200, 4400, 3900, 3300, 2500, 1900, 1200, 700]
    result = plan("balanced", gpus, [svc(f"s{i}", n) for i, n in enumerate(needs)])
    fractions = {g.index: 0 for g in gpus}
    for i, n in enumerate(needs):
        fractions[result.gpu_of(f"s{i}")] += n
    used = [fractions[g.index] / g.total_mb for g in gpus]
    assert all(u <= 1 for u in used)
    # 44 500 MB over 57 344 MB: a perfect split would give each GPU 77.6 %.
    assert max(used) - min(used) < 0.02


def test_balanced_uses_a_bounded_search_above_the_exact_size():
    assert not balanced_module._exact_fits(8, 64)
    gpus = [gpu(i, (8 + 4 * (i % 3)) * GB) for i in range(8)]
    services = [svc(f"s{i}", 300 + (i * 7919) % 2500) for i in range(64)]
    result = plan("balanced", gpus, services)
    assert len(result.placements) == 64
    assert "over_capacity" not in codes(result.issues)


def test_balanced_puts_services_that_need_nothing_on_the_first_gpu():
    gpus = [gpu(2, 8 * GB), gpu(5, 8 * GB)]
    result = plan("balanced", gpus, [svc("idle", 0), svc("a", GB), svc("b", GB)])
    assert where(result) == {"idle": 2, "a": 2, "b": 5}


# Warnings -------------------------------------------------------------------------------------


def test_over_capacity_names_the_gpu_the_services_and_the_shortfall():
    issues = check(REFERENCE_GPUS, [ENRICHMENT], on([ENRICHMENT], 1))
    issue = only(issues, "over_capacity")
    assert issue.gpu_index == 1
    assert (issue.needed_mb, issue.available_mb) == (6963, 4094)
    assert issue.message == (
        "GPU 1 (RTX A400) is over capacity by 2.9 GB: ai-enrichment needs 6.8 GB, 4.0 GB "
        "available. ai-enrichment fits if you set its VRAM budget to 3.5 GB."
    )


def test_over_capacity_lists_every_service_on_the_gpu_and_counts_foreign_use():
    busy = replace(A400, foreign_used_mb=2048)
    issues = check([A5500, busy], [FLORENCE, CLIP], on([FLORENCE, CLIP], 1, 1))
    # 2048 + 1536 + 1229 − 4094 = 719 MB over, shown rounded up.
    assert only(issues, "over_capacity").message == (
        "GPU 1 (RTX A400) is over capacity by 0.8 GB: ai-florence needs 1.5 GB, "
        "ai-clip needs 1.2 GB, 2.0 GB available."
    )


def test_a_full_but_not_over_committed_gpu_has_no_warning():
    exact = svc("exact", 4094)
    assert check(REFERENCE_GPUS, [exact], on([exact], 1)) == ()


def test_a_4_gb_gpu_suggests_a_3_5_gb_budget_for_ai_enrichment():
    placements = on([ENRICHMENT], 1)
    assert suggest_budget_gb(A400, [ENRICHMENT], placements, ENRICHMENT) == 3.5
    assert suggest_budget_gb(A400, [ENRICHMENT], placements, "ai-enrichment") == 3.5
    # One problem, one warning: the over-capacity warning carries the suggestion.
    (issue,) = check(REFERENCE_GPUS, [ENRICHMENT], placements)
    assert issue.code == "over_capacity"
    assert issue.suggested_budget_gb == 3.5
    assert issue.service == "ai-enrichment" and issue.gpu_index == 1
    assert issue.severity == "warning"
    assert issue.message.count("3.5 GB") == 1


def test_the_suggested_budget_fits_with_its_headroom():
    services = [FLORENCE, ENRICHMENT]
    placements = on(services, 1, 1)
    suggestion = only(check(REFERENCE_GPUS, services, placements), "over_capacity")
    assert suggestion.suggested_budget_gb == 2.0
    fixed = [FLORENCE, replace(ENRICHMENT, budget_gb=suggestion.suggested_budget_gb)]
    assert free_mb(REFERENCE_GPUS, fixed, on(fixed, 1, 1))[1] >= 0


def test_the_suggestion_leaves_room_for_the_other_services_and_foreign_use():
    busy = replace(A400, foreign_used_mb=300)
    services = [CLIP, ENRICHMENT]
    # 4094 − 300 − 1229 = 2565 MB; less 512 MB headroom = 2.0 GB.
    assert suggest_budget_gb(busy, services, on(services, 1, 1), ENRICHMENT) == 2.0


def test_the_suggestion_is_never_more_than_the_default_budget():
    assert suggest_budget_gb(A5500, [ENRICHMENT], on([ENRICHMENT], 0), ENRICHMENT) == 6.8


def test_the_suggestion_is_rounded_down_to_a_default_budget_off_the_tenths():
    odd = replace(ENRICHMENT, default_budget_gb=6.86)
    assert suggest_budget_gb(A5500, [odd], on([odd], 0), odd) == 6.8


def test_no_suggestion_for_a_service_without_an_adjustable_budget():
    assert suggest_budget_gb(A400, [LLM], on([LLM], 1), LLM) is None
    assert "budget_suggestion" not in codes(check(REFERENCE_GPUS, [LLM], on([LLM], 1)))


def test_no_suggestion_when_not_even_a_tenth_of_a_gb_would_fit():
    full = replace(A400, foreign_used_mb=3600)
    assert suggest_budget_gb(full, [ENRICHMENT], on([ENRICHMENT], 1), ENRICHMENT) is None
    issues = check([A5500, full], [ENRICHMENT], on([ENRICHMENT], 1))
    assert codes(issues) == ["over_capacity"]


def test_no_budget_warning_when_the_budget_fits():
    assert check(REFERENCE_GPUS, [ENRICHMENT], on([ENRICHMENT], 0)) == ()


def test_an_accepted_budget_override_clears_the_warnings():
    fitted = replace(ENRICHMENT, budget_gb=3.5)
    assert check(REFERENCE_GPUS, [fitted], on([fitted], 1)) == ()


def test_a_budget_override_the_gpu_cannot_give_is_too_large():
    greedy = replace(ENRICHMENT, budget_gb=5.0)
    (issue,) = check(REFERENCE_GPUS, [greedy], on([greedy], 1))
    assert issue.suggested_budget_gb == 3.5
    assert issue.message == (
        "VRAM Budget Exceeded: the budget of ai-enrichment (5.0 GB) is more than GPU 1 "
        "(RTX A400) has room for. "
        "GPU 1 (RTX A400) is over capacity by 1.1 GB: ai-enrichment needs 5.0 GB, 4.0 GB "
        "available. ai-enrichment fits if you set its VRAM budget to 3.5 GB."
    )


def test_a_default_budget_that_does_not_fit_is_not_called_a_budget_someone_exceeded():
    (issue,) = check(REFERENCE_GPUS, [ENRICHMENT], on([ENRICHMENT], 1))
    assert not issue.message.startswith("VRAM Budget Exceeded")


def test_a_budget_carried_by_the_placement_wins_over_the_services_own():
    placements = [Placement("ai-enrichment", 1, budget_gb=3.0)]
    assert check(REFERENCE_GPUS, [ENRICHMENT], placements) == ()
    assert free_mb(REFERENCE_GPUS, [ENRICHMENT], placements) == {0: 24564, 1: 4094 - 3072}


def test_check_reports_a_service_without_a_placement_as_unassigned():
    assert codes(check(REFERENCE_GPUS, [CLIP, YOLO], on([CLIP], 0))) == ["unassigned"]


def test_check_refuses_a_placement_for_an_unknown_service():
    with pytest.raises(ValueError, match="unknown service"):
        check(REFERENCE_GPUS, [CLIP], [Placement("ai-ghost", 0)])


def test_every_plan_carries_the_capacity_warnings():
    result = plan("isolation_first", REFERENCE_GPUS, REFERENCE_SERVICES)
    over = only(result.issues, "over_capacity")
    assert over.gpu_index == 1
    assert over.message.startswith("GPU 1 (RTX A400) is over capacity by 6.2 GB: ")
    assert result.warnings == [issue.message for issue in result.issues]


# Budgets in automatic plans --------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["vram_based", "latency_optimized", "balanced"])
def test_automatic_plans_for_the_reference_box_fit_by_lowering_the_enrichment_budget(strategy):
    result = plan(strategy, REFERENCE_GPUS, REFERENCE_SERVICES)
    # At full budgets no placement fits (32.6 GB of need, 28.0 GB of VRAM). With ai-enrichment
    # at 2.0 GB plus headroom, only LLM + Florence + YOLO on GPU 0 and CLIP + enrichment on
    # GPU 1 fit; the budget then grows to what GPU 1 gives: 4094 - 1229 - 512 MB = 2.3 GB.
    assert where(result) == {
        "ai-llm": 0,
        "ai-yolo26": 0,
        "ai-florence": 0,
        "ai-clip": 1,
        "ai-enrichment": 1,
    }
    assert result.budget_of("ai-enrichment") == 2.3
    assert result.budget_of("ai-clip") is None
    notice = only(result.issues, "budget_auto_adjusted")
    assert notice.severity == "info"
    assert (notice.service, notice.gpu_index, notice.suggested_budget_gb) == (
        "ai-enrichment",
        1,
        2.3,
    )
    assert (notice.needed_mb, notice.available_mb) == (6963, 4094 - 1229)
    assert notice.message == (
        "The VRAM budget of ai-enrichment was lowered from 6.8 GB to 2.3 GB so that it fits on "
        "GPU 1 (RTX A400)."
    )
    assert codes(result.issues) == ["budget_auto_adjusted"]
    # The headroom is 0.5 GB, less the rounding of the budget to 0.1 GB.
    assert free_mb(REFERENCE_GPUS, REFERENCE_SERVICES, result.placements)[1] >= 512 - 51


def test_the_balanced_reference_plan_is_no_longer_170_against_104_percent():
    fixed = plan("balanced", REFERENCE_GPUS, fixed_budget(REFERENCE_SERVICES))
    assert codes(fixed.issues) == ["over_capacity", "over_capacity"]
    result = plan("balanced", REFERENCE_GPUS, REFERENCE_SERVICES)
    free = free_mb(REFERENCE_GPUS, REFERENCE_SERVICES, result.placements)
    assert min(free.values()) >= 0


def test_a_budget_is_lowered_only_on_a_gpu_it_over_commits():
    gpus = [gpu(0, 24 * GB), gpu(1, 12 * GB)]
    result = plan("vram_based", gpus, REFERENCE_SERVICES[1:])
    assert result.budget_of("ai-enrichment") is None
    assert "budget_auto_adjusted" not in codes(result.issues)


def test_a_plan_knows_no_budget_for_a_service_it_does_not_place():
    with pytest.raises(KeyError, match="ai-ghost"):
        plan("vram_based", REFERENCE_GPUS, REFERENCE_SERVICES).budget_of("ai-ghost")


def test_an_explicit_budget_that_fits_is_kept():
    services = [replace(ENRICHMENT, budget_gb=2.5), CLIP]
    result = plan("vram_based", [A400], services)
    assert result.budget_of("ai-enrichment") == 2.5
    assert result.issues == ()


def test_an_explicit_budget_that_does_not_fit_is_lowered_like_the_default():
    services = [replace(ENRICHMENT, budget_gb=5.0)]
    result = plan("balanced", [A400], services)
    assert result.budget_of("ai-enrichment") == 3.5
    assert only(result.issues, "budget_auto_adjusted").needed_mb == 5120


def test_manual_plans_never_change_a_budget():
    services = [replace(ENRICHMENT, current_gpu=1)]
    result = plan("manual", REFERENCE_GPUS, services)
    assert result.budget_of("ai-enrichment") is None
    assert codes(result.issues) == ["over_capacity"]
    assert result.issues[0].suggested_budget_gb == 3.5


def test_a_gpu_that_budgets_cannot_rescue_keeps_its_budgets_and_warns():
    gpus = [gpu(0, 4 * GB)]
    services = [svc("big", 3 * GB), ENRICHMENT]
    result = plan("vram_based", gpus, services)
    # 4096 - 3072 = 1024 MB left: below 2.0 GB + headroom, so ai-enrichment keeps 6.8 GB.
    assert result.budget_of("ai-enrichment") is None
    issue = only(result.issues, "over_capacity")
    assert issue.suggested_budget_gb is None and issue.service is None
    assert issue.message.endswith(
        "Lowering a VRAM budget is not enough: ai-enrichment does not fit here even at its "
        "minimum of 2.0 GB."
    )


def test_two_adjustable_services_on_one_gpu_share_what_is_left():
    other = replace(ENRICHMENT, name="zoo-2")
    result = plan("vram_based", [gpu(0, 8 * GB)], [ENRICHMENT, other])
    # 8192 MB: the second keeps its 2.0 GB minimum, the first gets 8192 - 2048 - 512 = 5.5 GB.
    assert result.budget_of("ai-enrichment") == 5.5
    assert result.budget_of("zoo-2") == 2.0
    assert codes(result.issues) == ["budget_auto_adjusted", "budget_auto_adjusted"]


def test_the_second_pass_places_an_adjustable_service_where_its_minimum_fits():
    # At 6.8 GB ai-enrichment fits nowhere beside the 7 GB service; at 2.0 GB it fits GPU 1.
    gpus = [gpu(0, 8 * GB), gpu(1, 4 * GB)]
    services = [svc("big", 7 * GB), svc("small", GB), ENRICHMENT]
    first = plan("vram_based", gpus, fixed_budget(services))
    assert "over_capacity" in codes(first.issues)
    result = plan("vram_based", gpus, services)
    assert where(result) == {"big": 0, "small": 0, "ai-enrichment": 1}
    assert result.budget_of("ai-enrichment") == 3.5
    assert codes(result.issues) == ["budget_auto_adjusted"]


# The minimum budget -------------------------------------------------------------------------


def test_no_budget_below_the_minimum_is_suggested():
    services = [YOLO, FLORENCE, CLIP, ENRICHMENT]
    placements = on(services, 1, 1, 1, 1)
    # 4094 - 666 - 1536 - 1229 - 512 = 151 MB: 0.1 GB, far below the 2.0 GB minimum.
    assert suggest_budget_gb(A400, services, placements, ENRICHMENT) is None
    without_floor = replace(ENRICHMENT, min_budget_gb=None)
    others = [YOLO, FLORENCE, CLIP, without_floor]
    assert suggest_budget_gb(A400, others, placements, without_floor) == 0.1


def test_the_minimum_budget_itself_may_be_suggested():
    services = [FLORENCE, ENRICHMENT]
    # 4094 - 1536 - 512 = 2046 MB, which rounds to 2.0 GB: exactly the minimum.
    assert suggest_budget_gb(A400, services, on(services, 1, 1), ENRICHMENT) == 2.0
    above = replace(ENRICHMENT, min_budget_gb=2.05)
    assert suggest_budget_gb(A400, [FLORENCE, above], on(services, 1, 1), above) is None


def test_isolation_first_on_the_reference_box_warns_without_suggesting_a_useless_budget():
    result = plan("isolation_first", REFERENCE_GPUS, REFERENCE_SERVICES)
    assert result.budget_of("ai-enrichment") is None
    issue = only(result.issues, "over_capacity")
    assert issue.suggested_budget_gb is None
    assert "0.1 GB" not in " ".join(result.warnings)
    assert "even at its minimum of 2.0 GB" in issue.message


# free_mb and fallback_gpu ---------------------------------------------------------------------


def test_free_mb_subtracts_foreign_use_and_the_services_placed_there():
    busy = replace(A5500, foreign_used_mb=1000)
    services = [LLM, CLIP, ENRICHMENT]
    assert free_mb([busy, A400], services, on(services, 0, 1, 1)) == {
        0: 24564 - 1000 - 22221,
        1: 4094 - 1229 - 6963,
    }


def test_free_mb_ignores_placements_on_gpus_that_are_not_present():
    assert free_mb(REFERENCE_GPUS, [CLIP], on([CLIP], 7)) == {0: 24564, 1: 4094}


def test_fallback_is_the_available_gpu_with_the_most_free_vram():
    services = [LLM, CLIP]
    assert fallback_gpu(REFERENCE_GPUS, services, on(services, 0, None)) == 1
    assert fallback_gpu(REFERENCE_GPUS, services, on(services, None, None)) == 0


def test_fallback_ignores_the_lost_gpu_and_breaks_ties_towards_the_lower_index():
    gpus = [gpu(0, 8 * GB, available=False), gpu(1, 8 * GB), gpu(2, 8 * GB)]
    assert fallback_gpu(gpus, [CLIP], on([CLIP], 0)) == 1


def test_fallback_is_none_when_no_gpu_is_available():
    assert fallback_gpu([replace(A400, available=False)], [CLIP], on([CLIP], 1)) is None


def test_an_overfull_gpu_sheds_the_smallest_service_that_clears_the_overflow():
    gpus = [gpu(0, 10_000), gpu(1, 10_000)]
    services = [
        svc("big", 6_000, current_gpu=0),
        svc("small", 2_000, current_gpu=0),
        svc("mid", 4_000, current_gpu=0),
    ]
    demand, target = overflow_move(0, gpus, services)
    # 12 000 MB on a 10 000 MB GPU: moving "small" (2 000) clears it; "mid" would too, but larger.
    assert (demand.name, target.index) == ("small", 1)


def test_an_overfull_gpu_keeps_a_gpu_an_isolated_service_has_to_itself():
    gpus = [gpu(0, 10_000), gpu(1, 10_000), gpu(2, 8_000)]
    services = [
        svc("a", 6_000, current_gpu=0),
        svc("b", 6_000, current_gpu=0),
        svc("alone", 1_000, current_gpu=1, isolated=True),
    ]
    # GPU 1 has room, but its isolated service keeps it to itself: no move without GPU 2.
    assert overflow_move(0, gpus[:2], services) is None
    demand, target = overflow_move(0, gpus, services)
    assert (demand.name, target.index) == ("a", 2)
