"""Manual: every service stays where the user put it."""

from __future__ import annotations

from collections.abc import Sequence

from ..registry import Proposal, register
from ..types import GpuView, ServiceDemand


@register(
    "manual",
    label="Manual",
    description="You choose the GPU and VRAM budget of each service yourself.",
    automatic=False,
)
def manual(gpus: Sequence[GpuView], services: Sequence[ServiceDemand]) -> Proposal:
    """Keep each service's ``current_gpu``. A service without one stays unplaced (and is
    reported as ``unassigned``); a GPU that is gone is reported, not replaced."""
    return Proposal(tuple(s.current_gpu for s in services))
