"""Services left unplaced for priority when memory is short.

The user's rules give services a priority (higher matters more). Budgets are lowered first
(:func:`~.budgets.lower_budgets`, lowest priority lowest). Where an automatic plan still
over-commits a GPU after that, and the services on it differ in priority, the services of the
lowest priority on it are taken off, one at a time, until what stays fits (with adjustable
budgets lowered again as far as that needs); the services of the highest priority there are
never taken off. Those taken off are then put back, highest priority first, while that still
fits (never one of lower priority than one that stays off). Each service left off has no GPU
(``gpu_index`` None) and an ``unplaced_for_priority`` warning naming it, the GPU, the
services it gave way to and what would let it be placed.

A GPU whose services all have the same priority (every service without a rule has 0) is left
as it was: the checks report it over capacity, as they always have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .budgets import lower_budgets
from .checks import gb, gb_up, gpu_label, room_mb
from .placing import need_mb, usable_gpus
from .types import GpuView, Issue, Placement, ServiceDemand

UNPLACED = "unplaced_for_priority"


def leave_unplaced(
    gpus: Sequence[GpuView],
    services: Sequence[ServiceDemand],
    placements: Sequence[Placement],
    priority: dict[str, int],
) -> tuple[tuple[Placement, ...], tuple[Issue, ...], tuple[Issue, ...]]:
    """``placements`` with the services of lowest priority taken off the GPUs that are still
    over-committed (see the module): the placements, the budget notices of the GPUs that
    changed, and one ``unplaced_for_priority`` warning per service left off."""
    result = list(placements)
    notices: list[Issue] = []
    warnings: list[Issue] = []
    if not any(priority.values()):
        return tuple(result), (), ()
    for gpu in usable_gpus(gpus):
        if _free(gpu, services, result) < 0:
            result, gpu_notices, gpu_warnings = _give_way(gpu, services, result, priority)
            notices.extend(gpu_notices)
            warnings.extend(gpu_warnings)
    return tuple(result), tuple(notices), tuple(warnings)


def _give_way(
    gpu: GpuView,
    services: Sequence[ServiceDemand],
    result: list[Placement],
    priority: dict[str, int],
) -> tuple[list[Placement], tuple[Issue, ...], list[Issue]]:
    """The placements with the lowest priorities taken off the over-committed ``gpu``."""
    on_gpu = [i for i, p in enumerate(result) if p.gpu_index == gpu.index]
    rank = {i: priority.get(services[i].name, 0) for i in on_gpu}
    top = max(rank.values())
    # Lowest priority first; among equals the later service gives way first.
    candidates = sorted((i for i in on_gpu if rank[i] < top), key=lambda i: (rank[i], -i))
    if not candidates:
        return result, (), []

    def attempt(off: list[int]) -> tuple[list[Placement], tuple[Issue, ...], bool]:
        """The placements with ``off`` taken off ``gpu`` and budgets lowered where that
        makes it fit (from the plan's own budgets), and whether it fits."""
        trial = list(result)
        for i in off:
            trial[i] = replace(trial[i], gpu_index=None)
        lowered, lowered_notices = lower_budgets([gpu], services, trial, priority)
        return list(lowered), lowered_notices, _free(gpu, services, lowered) >= 0

    taken: list[int] = []
    for i in candidates:
        taken.append(i)
        fitted, notices, fits = attempt(taken)
        if fits:
            break
    # Put back what still fits, highest priority first (taking off in order may have taken
    # off a small service before the large one that alone made the difference). When even the
    # highest priority alone over-commits, the others still give way to it. One that stays
    # off keeps every lower priority off too: a service left off never ranks above one placed
    # on its GPU.
    floor = None
    for i in sorted(taken, key=lambda i: (-rank[i], i)):
        if floor is not None and rank[i] < floor:
            break
        back = [j for j in taken if j != i]
        trial, trial_notices, fits = attempt(back)
        if fits:
            fitted, notices, taken = trial, trial_notices, back
        else:
            floor = rank[i]
    warnings = []
    for i in sorted(taken):
        above = [services[j].name for j in on_gpu if j not in taken and rank[j] > rank[i]]
        warnings.append(_warning(gpu, services, fitted, services[i], result[i], above, rank))
    return fitted, notices, warnings


def _free(gpu: GpuView, services: Sequence[ServiceDemand], placements) -> int:
    by_name = {s.name: s for s in services}
    used = sum(need_mb(by_name[p.service], p) for p in placements if p.gpu_index == gpu.index)
    return gpu.total_mb - gpu.foreign_used_mb - used


def _warning(
    gpu: GpuView,
    services: Sequence[ServiceDemand],
    placements: Sequence[Placement],
    service: ServiceDemand,
    was: Placement,
    above: list[str],
    rank: dict[int, int],
) -> Issue:
    need = need_mb(service, was)
    room = max(room_mb(gpu, services, placements, service.name), 0)
    own = rank[services.index(service)]
    higher = max(rank.values())
    label = gpu_label(gpu)
    gave_way = ", ".join(above)
    text = (
        f"{service.name} is left unplaced: memory on {label} is short, and it gives way to "
        f"{gave_way} (priority {own}, lower than theirs). It needs {gb(need)} GB, "
        f"{gb(room)} GB is left there. It can be placed if {gb_up(need - room)} GB more is free "
        f"on {label}, if its priority is raised to {higher}, or on another GPU with room."
    )
    return Issue(
        UNPLACED,
        text,
        service=service.name,
        gpu_index=gpu.index,
        needed_mb=need,
        available_mb=room,
        remedies=(
            f"free {gb_up(need - room)} GB on {label}",
            f"raise the priority of {service.name} to {higher}",
            "add a GPU",
        ),
    )
