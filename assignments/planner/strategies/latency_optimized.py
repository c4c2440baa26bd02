"""Latency-optimized: the time-critical services on the fastest GPU, the rest elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

from ..placing import capacity_mb, largest_first, most_free, usable_gpus
from ..registry import BUDGET_NOTE, Proposal, register
from ..types import GpuView, ServiceDemand


def fastest_gpu(gpus: Sequence[GpuView]) -> GpuView:
    """Highest compute capability, then most VRAM, then lowest index."""
    return min(
        gpus, key=lambda g: (tuple(-part for part in g.compute_capability), -g.total_mb, g.index)
    )


@register(
    "latency_optimized",
    label="Latency-Optimized",
    description=(
        "Keeps latency-critical services on the fastest GPU while they fit there, and puts "
        "every other service on another GPU wherever it fits. " + BUDGET_NOTE
    ),
)
def latency_optimized(gpus: Sequence[GpuView], services: Sequence[ServiceDemand]) -> Proposal:
    """Latency-critical services, largest first, go to the fastest GPU while they fit there.

    Everything else (including a latency-critical service that did not fit) is placed largest
    first on the other GPU with the most free VRAM where it fits; on the fastest GPU only when
    it fits nowhere else; and, when it fits nowhere at all, wherever most VRAM is free.
    """
    usable = usable_gpus(gpus)
    chosen: list[int | None] = [None] * len(services)
    if not usable:
        return Proposal(tuple(chosen))
    fast = fastest_gpu(usable).index
    others = [g.index for g in usable if g.index != fast]
    free = capacity_mb(usable)

    rest = [i for i, s in enumerate(services) if not s.latency_critical]
    for i in largest_first(services, (i for i, s in enumerate(services) if s.latency_critical)):
        need = services[i].effective_mb
        if need <= free[fast]:
            chosen[i] = fast
            free[fast] -= need
        else:
            rest.append(i)

    for i in largest_first(services, rest):
        need = services[i].effective_mb
        fitting = [index for index in others if need <= free[index]]
        if fitting:
            index = most_free(fitting, free)
        elif need <= free[fast]:
            index = fast
        else:
            index = most_free(free.keys(), free)
        chosen[i] = index
        free[index] -= need
    return Proposal(tuple(chosen))
