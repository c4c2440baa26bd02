"""Isolation-first: isolated services (the LLM) get the largest GPU to themselves."""

from __future__ import annotations

from collections.abc import Sequence

from ..checks import gpu_label
from ..placing import capacity_mb, spread, usable_gpus
from ..registry import BUDGET_NOTE, Proposal, register
from ..types import GpuView, Issue, ServiceDemand


@register(
    "isolation_first",
    label="Isolation-First",
    description=(
        "Gives isolated services (the LLM) the largest GPU to themselves; all other services "
        "share the remaining GPUs. " + BUDGET_NOTE
    ),
)
def isolation_first(gpus: Sequence[GpuView], services: Sequence[ServiceDemand]) -> Proposal:
    """Isolated services alone on the largest GPU (most total VRAM, ties: lower index); all
    others spread over all remaining GPUs by the VRAM-based rule.

    With one available GPU everything shares it and each isolated service gets an
    ``isolation_impossible`` warning. With no isolated service, all GPUs are shared.
    """
    usable = usable_gpus(gpus)
    chosen: list[int | None] = [None] * len(services)
    if not usable:
        return Proposal(tuple(chosen))
    isolated = [i for i, s in enumerate(services) if s.isolated]
    shared = [i for i, s in enumerate(services) if not s.isolated]
    free = capacity_mb(usable)

    if not isolated:
        spread(services, shared, [g.index for g in usable], free, chosen)
        return Proposal(tuple(chosen))

    if len(usable) == 1:
        only = usable[0]
        issues = ()
        if shared:
            issues = tuple(
                Issue(
                    "isolation_impossible",
                    f"Only one GPU is available, so {services[i].name} cannot have a GPU to "
                    f"itself; all services share {gpu_label(only)}.",
                    service=services[i].name,
                    gpu_index=only.index,
                )
                for i in isolated
            )
        return Proposal(tuple(only.index for _ in services), issues)

    largest = min(usable, key=lambda g: (-g.total_mb, g.index)).index
    for i in isolated:
        chosen[i] = largest
    spread(services, shared, [g.index for g in usable if g.index != largest], free, chosen)
    return Proposal(tuple(chosen))
