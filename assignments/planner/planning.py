"""The planner's entry point: a strategy name and an inventory snapshot in, a Plan out."""

from __future__ import annotations

from collections.abc import Sequence

from .checks import check
from .placing import planned_budget_gb
from .registry import get_strategy
from .types import GpuView, Placement, Plan, ServiceDemand


def plan(strategy: str, gpus: Sequence[GpuView], services: Sequence[ServiceDemand]) -> Plan:
    """Plan ``services`` onto ``gpus`` with the strategy named ``strategy``.

    Pure and deterministic. The plan has exactly one placement per service, in the order of
    ``services``, and carries every warning :func:`~.checks.check` finds plus the strategy's
    own. Raises :class:`~.registry.UnknownStrategy` for an unknown name and ``ValueError`` for
    duplicate service names or GPU indices.
    """
    chosen = get_strategy(strategy)
    if len({s.name for s in services}) != len(services):
        raise ValueError("service names must be unique")
    if len({g.index for g in gpus}) != len(gpus):
        raise ValueError("GPU indices must be unique")
    proposal = chosen.func(gpus, services)
    if len(proposal.gpu_indices) != len(services):
        raise RuntimeError(f"strategy {strategy!r} did not place every service exactly once")
    placements = tuple(
        Placement(service=s.name, gpu_index=index, budget_gb=planned_budget_gb(s))
        for s, index in zip(services, proposal.gpu_indices)
    )
    return Plan(
        strategy=strategy,
        placements=placements,
        issues=proposal.issues + check(gpus, services, placements),
    )
