"""VRAM-based: largest models first, each on the GPU with the most free VRAM."""

from __future__ import annotations

from collections.abc import Sequence

from ..placing import capacity_mb, spread, usable_gpus
from ..registry import BUDGET_NOTE, Proposal, register
from ..types import GpuView, ServiceDemand


@register(
    "vram_based",
    label="VRAM-Based (Recommended)",
    description=(
        "Places the largest models first, each on the GPU with the most free memory. " + BUDGET_NOTE
    ),
)
def vram_based(gpus: Sequence[GpuView], services: Sequence[ServiceDemand]) -> Proposal:
    """Services by effective need, largest first (ties in input order), each to the available
    GPU with the most free VRAM left after what is already planned (ties: lower index)."""
    usable = usable_gpus(gpus)
    chosen: list[int | None] = [None] * len(services)
    if usable:
        spread(
            services, range(len(services)), [g.index for g in usable], capacity_mb(usable), chosen
        )
    return Proposal(tuple(chosen))
