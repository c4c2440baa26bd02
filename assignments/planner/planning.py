"""The planner's entry point: a strategy name and an inventory snapshot in, a Plan out."""

from __future__ import annotations

from collections.abc import Sequence

from .budgets import fitted_plan
from .checks import check
from .priority import leave_unplaced
from .registry import get_strategy
from .rules import broken, prepare
from .types import GpuView, Issue, Plan, ServiceDemand, ServiceRule


def plan(
    strategy: str,
    gpus: Sequence[GpuView],
    services: Sequence[ServiceDemand],
    rules: Sequence[ServiceRule] = (),
) -> Plan:
    """Plan ``services`` onto ``gpus`` with the strategy named ``strategy``.

    Pure and deterministic. The plan has exactly one placement per service, in the order of
    ``services``. An automatic strategy's plan lowers adjustable budgets where that makes it fit
    (:mod:`.budgets`). Its issues are the strategy's own warnings, the ``budget_auto_adjusted``
    notices, then every warning :func:`~.checks.check` finds.

    ``rules`` (the user's, see :mod:`.rules`) are honoured by every automatic strategy whenever
    they can all hold; rules that cannot are reported as ``rule_conflict`` issues (never
    raised), and a manual placement that breaks one as ``rule_broken``. Where memory is still
    short after budgets are lowered, services of lower priority give way to higher ones on
    their GPU and are left unplaced, each with an ``unplaced_for_priority`` warning
    (:mod:`.priority`). Raises
    :class:`~.registry.UnknownStrategy` for an unknown name and ``ValueError`` for duplicate
    service names or GPU indices.
    """
    chosen = get_strategy(strategy)
    if len({s.name for s in services}) != len(services):
        raise ValueError("service names must be unique")
    if len({g.index for g in gpus}) != len(gpus):
        raise ValueError("GPU indices must be unique")
    ruleset = prepare(gpus, services, rules)
    proposal, placements, notices = fitted_plan(chosen, gpus, services, ruleset)
    unplaced: tuple[Issue, ...] = ()
    if chosen.automatic:
        placements, lowered, unplaced = leave_unplaced(gpus, services, placements, ruleset.priority)
        notices += lowered
    # A service left off for priority is reported once, by its own warning: not also as
    # unassigned, nor as breaking its rules (a pin, say) on no GPU.
    off = {issue.service for issue in unplaced}
    return Plan(
        strategy=strategy,
        placements=placements,
        issues=proposal.issues
        + ruleset.issues
        + tuple(i for i in broken(ruleset, services, placements) if i.service not in off)
        + notices
        + unplaced
        + tuple(
            i
            for i in check(gpus, services, placements)
            if not (i.code == "unassigned" and i.service in off)
        ),
    )
