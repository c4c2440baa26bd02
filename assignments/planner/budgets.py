"""Adjustable VRAM budgets in automatic plans.

A service with an adjustable budget (the enrichment model zoo) runs with less VRAM than its
default, down to its minimum useful budget. An automatic strategy places services by their
current need; where that leaves a GPU over-committed, the planner lowers the budgets of the
adjustable services on it to what the GPU can give them (the suggestion of
:func:`~.checks.suggest_budget_gb`), if that makes the GPU fit, and says so with a
``budget_auto_adjusted`` notice. When the plan still does not fit, the strategy is asked again
with each adjustable service counted at its minimum budget plus headroom, and that plan (with
its budgets raised again as far as its GPU allows) is taken when it over-commits less.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .checks import (
    HEADROOM_MB,
    free_mb,
    gb,
    gpu_label,
    min_budget_gb,
    overflow_mb,
    room_mb,
    suggest_budget_gb,
)
from .placing import need_mb, planned_budget_gb, usable_gpus
from .registry import Proposal, Strategy
from .rules import RuleSet, enforce
from .types import MB_PER_GB, NOTICE, GpuView, Issue, Placement, Plan, ServiceDemand


def fitted_plan(
    strategy: Strategy,
    gpus: Sequence[GpuView],
    services: Sequence[ServiceDemand],
    ruleset: RuleSet | None = None,
) -> tuple[Proposal, tuple[Placement, ...], tuple[Issue, ...]]:
    """The strategy's proposal, its placements with budgets, and the budget notices.

    Only an automatic strategy's budgets are lowered, and its proposals moved to honour the
    user's rules (``ruleset``, see :mod:`.rules`); a manual plan is taken as it is.
    """
    ruleset = ruleset or RuleSet()
    proposal = propose(strategy, gpus, services, ruleset)
    placements = placements_of(services, proposal)
    if not strategy.automatic:
        return proposal, placements, ()
    priority = ruleset.priority
    placements, notices = lower_budgets(gpus, services, placements, priority)
    if overflow_mb(gpus, services, placements) == 0:
        return proposal, placements, notices
    shrunk = [_at_floor(s) for s in services]
    if shrunk == list(services):
        return proposal, placements, notices
    second = propose(strategy, gpus, shrunk, ruleset)
    again, again_notices = lower_budgets(gpus, services, placements_of(services, second), priority)
    if overflow_mb(gpus, services, again) < overflow_mb(gpus, services, placements):
        return second, again, again_notices
    return proposal, placements, notices


def propose(
    strategy: Strategy,
    gpus: Sequence[GpuView],
    services: Sequence[ServiceDemand],
    ruleset: RuleSet | None = None,
) -> Proposal:
    """The strategy's proposal; an automatic one's moved where the rules require it."""
    proposal = strategy.func(gpus, services)
    if len(proposal.gpu_indices) != len(services):
        raise RuntimeError(f"strategy {strategy.name!r} did not place every service exactly once")
    if strategy.automatic and ruleset is not None and ruleset.problem is not None:
        moved = enforce(ruleset, gpus, services, proposal.gpu_indices)
        if moved != proposal.gpu_indices:
            return replace(proposal, gpu_indices=moved)
    return proposal


def placements_of(services: Sequence[ServiceDemand], proposal: Proposal) -> tuple[Placement, ...]:
    return tuple(
        Placement(service=s.name, gpu_index=index, budget_gb=planned_budget_gb(s))
        for s, index in zip(services, proposal.gpu_indices)
    )


def lower_budgets(
    gpus: Sequence[GpuView],
    services: Sequence[ServiceDemand],
    placements: Sequence[Placement],
    priority: dict[str, int] | None = None,
) -> tuple[tuple[Placement, ...], tuple[Issue, ...]]:
    """Lower adjustable budgets on each over-committed GPU where that makes it fit.

    On one GPU the adjustable services are taken highest ``priority`` first (the user's rules;
    ties in input order); each gets what the GPU can give it with the later ones at their
    minimum (less headroom), never more than it had, so the lowest priority is lowered most. A
    GPU that would still be over-committed keeps its budgets, and is warned about by the checks.
    """
    priority = priority or {}
    result = list(placements)
    notices: list[Issue] = []
    for gpu in usable_gpus(gpus):
        if free_mb([gpu], services, result)[gpu.index] >= 0:
            continue
        positions = sorted(
            (
                i
                for i, (s, p) in enumerate(zip(services, result))
                if p.gpu_index == gpu.index and s.budget_adjustable
            ),
            key=lambda i: (-priority.get(services[i].name, 0), i),
        )
        trial = list(result)
        for i in positions:
            trial[i] = replace(trial[i], budget_gb=min_budget_gb(services[i]))
        changed = []
        for i in positions:
            suggestion = suggest_budget_gb(gpu, services, trial, services[i])
            before = need_mb(services[i], result[i])
            if suggestion is None or round(suggestion * MB_PER_GB) >= before:
                trial[i] = result[i]
                continue
            trial[i] = replace(trial[i], budget_gb=suggestion)
            changed.append(i)
        if not changed or free_mb([gpu], services, trial)[gpu.index] < 0:
            continue
        for i in changed:
            before = need_mb(services[i], result[i])
            notices.append(_notice(gpu, services, trial, services[i], before))
        result = trial
    return tuple(result), tuple(notices)


def _notice(
    gpu: GpuView,
    services: Sequence[ServiceDemand],
    placements: Sequence[Placement],
    service: ServiceDemand,
    before_mb: int,
) -> Issue:
    budget = next(p.budget_gb for p in placements if p.service == service.name)
    return Issue(
        "budget_auto_adjusted",
        f"The VRAM budget of {service.name} was lowered from {gb(before_mb)} GB to "
        f"{budget:.1f} GB so that it fits on {gpu_label(gpu)}.",
        service=service.name,
        gpu_index=gpu.index,
        suggested_budget_gb=budget,
        severity=NOTICE,
        needed_mb=before_mb,
        available_mb=room_mb(gpu, services, placements, service.name),
    )


def _at_floor(service: ServiceDemand) -> ServiceDemand:
    """``service`` counted at its minimum budget plus headroom, when that is less."""
    if not service.budget_adjustable:
        return service
    floor_mb = round(min_budget_gb(service) * MB_PER_GB) + HEADROOM_MB
    if floor_mb >= service.effective_mb:
        return service
    return replace(service, budget_gb=floor_mb / MB_PER_GB)


def budgets_lowered(plan: Plan, services: Sequence[ServiceDemand]) -> dict[str, float]:
    """The budgets (GB) ``plan`` gives adjustable services in place of their own: what a save
    of the plan must keep as overrides so that the saved configuration is the plan shown."""
    own = {s.name: s.budget_gb for s in services if s.budget_adjustable}
    return {
        p.service: p.budget_gb
        for p in plan.placements
        if p.service in own and p.budget_gb is not None and p.budget_gb != own[p.service]
    }
