"""Small helpers the strategies share: which GPUs may receive services, in what order services
are placed, and the "most free VRAM" rule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .types import MB_PER_GB, GpuView, Placement, ServiceDemand


def usable_gpus(gpus: Sequence[GpuView]) -> list[GpuView]:
    """GPUs an automatic strategy may place services on, by index: available, with VRAM."""
    return sorted((g for g in gpus if g.available and g.total_mb > 0), key=lambda g: g.index)


def largest_first(services: Sequence[ServiceDemand], positions: Iterable[int]) -> list[int]:
    """``positions`` into ``services``, largest effective need first, ties in input order."""
    return sorted(positions, key=lambda i: (-services[i].effective_mb, i))


def most_free(candidates: Iterable[int], free: dict[int, int]) -> int:
    """The candidate GPU index with the most free VRAM; ties go to the lower index."""
    return min(candidates, key=lambda index: (-free[index], index))


def capacity_mb(gpus: Iterable[GpuView]) -> dict[int, int]:
    """VRAM each GPU offers the planned services: total minus what other processes hold."""
    return {g.index: g.total_mb - g.foreign_used_mb for g in gpus}


def spread(
    services: Sequence[ServiceDemand],
    positions: Iterable[int],
    candidates: Sequence[int],
    free: dict[int, int],
    chosen: list[int | None],
) -> None:
    """Place ``positions`` largest first, each on the candidate with the most free VRAM.

    ``free`` and ``chosen`` are updated in place.
    """
    for i in largest_first(services, positions):
        index = most_free(candidates, free)
        chosen[i] = index
        free[index] -= services[i].effective_mb


def need_mb(service: ServiceDemand, placement: Placement | None = None) -> int:
    """Effective VRAM need, honouring a budget carried by the placement (a manual edit)."""
    if service.budget_adjustable and placement is not None and placement.budget_gb is not None:
        return round(placement.budget_gb * MB_PER_GB)
    return service.effective_mb


def planned_budget_gb(service: ServiceDemand) -> float | None:
    """The budget a placement carries: the service's own override, if it can have one."""
    return service.budget_gb if service.budget_adjustable else None
