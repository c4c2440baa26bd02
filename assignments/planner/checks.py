"""Warnings and VRAM arithmetic for any set of placements.

Used by :func:`~.planning.plan` for every strategy, and by the save path for manual edits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .placing import most_free, need_mb, usable_gpus
from .types import MB_PER_GB, GpuView, Issue, Placement, ServiceDemand

HEADROOM_MB = MB_PER_GB // 2
"""VRAM a suggested budget leaves free on its GPU (0.5 GB)."""


def free_mb(
    gpus: Sequence[GpuView], services: Sequence[ServiceDemand], placements: Sequence[Placement]
) -> dict[int, int]:
    """Free VRAM per GPU index: total − foreign use − effective need of the services placed
    there. Negative when a GPU is over-committed."""
    by_name = _services_by_name(services)
    free = {g.index: g.total_mb - g.foreign_used_mb for g in gpus}
    for placement in placements:
        if placement.gpu_index in free:
            free[placement.gpu_index] -= need_mb(_service(by_name, placement), placement)
    return free


def fallback_gpu(
    gpus: Sequence[GpuView], services: Sequence[ServiceDemand], placements: Sequence[Placement]
) -> int | None:
    """The available GPU with the most free VRAM (ties: lower index), or None when no GPU is
    available. For services whose GPU was lost."""
    usable = usable_gpus(gpus)
    if not usable:
        return None
    free = free_mb(usable, services, placements)
    return most_free(free, free)


def suggest_budget_gb(
    gpu: GpuView,
    services: Sequence[ServiceDemand],
    placements: Sequence[Placement],
    service: ServiceDemand | str,
) -> float | None:
    """The VRAM budget (GB) to suggest for ``service`` on ``gpu``.

    That is what the GPU can give after its foreign use and the other services planned on it,
    less 0.5 GB headroom, rounded to 0.1 GB, and at most the service's default budget. None when
    the service has no adjustable budget or the result would be below its minimum useful budget
    (``min_budget_gb``; 0.1 GB when it has none). A 4094 MB GPU with nothing else on it gives
    3.5 GB.
    """
    if isinstance(service, str):
        try:
            service = _services_by_name(services)[service]
        except KeyError:
            raise ValueError(f"unknown service {service!r}") from None
    if not service.budget_adjustable:
        return None
    tenths = _suggested_tenths(room_mb(gpu, services, placements, service.name))
    ceiling = service.default_budget_gb
    if ceiling is None:
        ceiling = service.need_mb / MB_PER_GB
    tenths = min(tenths, _tenths(ceiling))
    floor = math.ceil(round(min_budget_gb(service) * 10, 6))
    return tenths / 10 if tenths >= floor else None


def min_budget_gb(service: ServiceDemand) -> float:
    """The smallest budget worth giving ``service``: its own minimum, else 0.1 GB."""
    return max(service.min_budget_gb or 0.1, 0.1)


def overflow_mb(
    gpus: Sequence[GpuView], services: Sequence[ServiceDemand], placements: Sequence[Placement]
) -> int:
    """Total VRAM by which the available GPUs are over-committed (0 when the plan fits)."""
    free = free_mb(usable_gpus(gpus), services, placements)
    return sum(max(0, -mb) for mb in free.values())


def check(
    gpus: Sequence[GpuView], services: Sequence[ServiceDemand], placements: Sequence[Placement]
) -> tuple[Issue, ...]:
    """The warnings for ``placements``, in a stable order, one per problem.

    Codes: ``unassigned`` (no GPU chosen although one is available), ``unplaced`` (no GPU is
    available at all), ``gpu_missing`` (placed on a GPU that is not present or not available)
    and ``over_capacity`` (one per over-committed GPU). When lowering the VRAM budget of one
    service on that GPU would make it fit, the ``over_capacity`` warning names that service and
    carries the budget as ``suggested_budget_gb``, in the same warning.
    """
    by_name = _services_by_name(services)
    by_index = {g.index: g for g in gpus}
    placed = {p.service: p for p in placements}
    for placement in placements:
        _service(by_name, placement)
    any_usable = bool(usable_gpus(gpus))

    issues: list[Issue] = []
    for service in services:
        placement = placed.get(service.name)
        index = placement.gpu_index if placement is not None else None
        need = need_mb(service, placement)
        if index is None:
            code, text = (
                ("unassigned", f"{service.name} has no GPU assigned.")
                if any_usable
                else ("unplaced", f"{service.name} could not be placed: no GPU is available.")
            )
            issues.append(Issue(code, text, service=service.name, needed_mb=need))
        elif index not in by_index or not by_index[index].available:
            where = gpu_label(by_index.get(index), index)
            state = "not present" if index not in by_index else "not available"
            issues.append(
                Issue(
                    "gpu_missing",
                    f"{service.name} is assigned to {where}, which is {state}.",
                    service=service.name,
                    gpu_index=index,
                    needed_mb=need,
                )
            )

    for gpu in sorted(gpus, key=lambda g: g.index):
        if gpu.available:
            issue = _over_capacity(gpu, services, placements, placed)
            if issue is not None:
                issues.append(issue)
    return tuple(issues)


def _over_capacity(
    gpu: GpuView,
    services: Sequence[ServiceDemand],
    placements: Sequence[Placement],
    placed: dict[str, Placement],
) -> Issue | None:
    """The one warning for an over-committed ``gpu``, with a budget fix when one exists."""
    on_gpu = [
        (s, placed[s.name])
        for s in services
        if s.name in placed and placed[s.name].gpu_index == gpu.index
    ]
    needed = sum(need_mb(s, p) for s, p in on_gpu)
    room = gpu.total_mb - gpu.foreign_used_mb
    if not on_gpu or needed <= room:
        return None
    needs = ", ".join(f"{s.name} needs {gb(need_mb(s, p))} GB" for s, p in on_gpu)
    text = _budget_exceeded(gpu, on_gpu, room) + (
        f"{gpu_label(gpu)} is over capacity by {gb_up(needed - room)} GB: "
        f"{needs}, {gb(max(room, 0))} GB available."
    )
    fix: tuple[str, float] | None = None
    floors: list[str] = []
    for s, _ in on_gpu:
        if not s.budget_adjustable:
            continue
        suggestion = suggest_budget_gb(gpu, services, placements, s)
        if suggestion is not None:
            fix = (s.name, suggestion)
            break
        floors.append(
            f"{s.name} does not fit here even at its minimum of {min_budget_gb(s):.1f} GB"
        )
    if fix is not None:
        text += f" {fix[0]} fits if you set its VRAM budget to {fix[1]:.1f} GB."
    elif floors:
        text += f" Lowering a VRAM budget is not enough: {'; '.join(floors)}."
    return Issue(
        "over_capacity",
        text,
        service=fix[0] if fix else None,
        gpu_index=gpu.index,
        suggested_budget_gb=fix[1] if fix else None,
        needed_mb=needed,
        available_mb=room,
    )


def _budget_exceeded(
    gpu: GpuView, on_gpu: Sequence[tuple[ServiceDemand, Placement]], room: int
) -> str:
    """The user guide's "VRAM Budget Exceeded" lead, when a budget someone set (not a default)
    is by itself more than ``gpu`` has room for; else empty."""
    for service, placement in on_gpu:
        explicit = placement.budget_gb if placement.budget_gb is not None else service.budget_gb
        too_big = need_mb(service, placement) > room
        if service.budget_adjustable and explicit is not None and too_big:
            return (
                f"VRAM Budget Exceeded: the budget of {service.name} ({explicit:.1f} GB) is more "
                f"than {gpu_label(gpu)} has room for. "
            )
    return ""


def gpu_label(gpu: GpuView | None, index: int | None = None) -> str:
    """``GPU 1 (RTX A400)``: the index and the name without the vendor prefix.

    The one way gpuconfig names a GPU (planner warnings, fallbacks, the page). ``gpu`` is anything
    with ``index`` and ``name``; without one (a GPU no longer known), ``GPU <index>``.
    """
    if gpu is None:
        return f"GPU {index}"
    name = gpu.name.strip()
    if name.upper().startswith("NVIDIA "):
        name = name[len("NVIDIA ") :].strip()
    return f"GPU {gpu.index} ({name})" if name else f"GPU {gpu.index}"


def gb(mb: int) -> str:
    """MB as GB with one decimal, rounded to the nearest 0.1."""
    return f"{_tenths_nearest(mb) / 10:.1f}"


def gb_up(mb: int) -> str:
    """MB as GB with one decimal, rounded up: a shortfall is never understated."""
    return f"{-(-mb * 10 // MB_PER_GB) / 10:.1f}"


def _tenths_nearest(mb: int) -> int:
    """Whole tenths of a GB nearest to ``mb`` (halves round up), in exact integer arithmetic."""
    return (mb * 10 + MB_PER_GB // 2) // MB_PER_GB


def _tenths(value_gb: float) -> int:
    """Whole tenths of a GB in ``value_gb``, rounded down (float noise aside)."""
    return math.floor(round(value_gb * 10, 6))


def _suggested_tenths(room: int) -> int:
    return _tenths_nearest(room - HEADROOM_MB)


def room_mb(
    gpu: GpuView, services: Sequence[ServiceDemand], placements: Sequence[Placement], name: str
) -> int:
    """What ``gpu`` can give the service ``name`` after its foreign use and the others on it."""
    by_name = _services_by_name(services)
    others = sum(
        need_mb(_service(by_name, p), p)
        for p in placements
        if p.gpu_index == gpu.index and p.service != name
    )
    return gpu.total_mb - gpu.foreign_used_mb - others


def _services_by_name(services: Sequence[ServiceDemand]) -> dict[str, ServiceDemand]:
    by_name = {s.name: s for s in services}
    if len(by_name) != len(services):
        raise ValueError("service names must be unique")
    return by_name


def _service(by_name: dict[str, ServiceDemand], placement: Placement) -> ServiceDemand:
    try:
        return by_name[placement.service]
    except KeyError:
        raise ValueError(f"placement for unknown service {placement.service!r}") from None


def overflow_move(
    gpu_index: int, gpus: Sequence[GpuView], services: Sequence[ServiceDemand]
) -> tuple[ServiceDemand, GpuView] | None:
    """A service to move off the over-full GPU ``gpu_index`` (services where they are now) and
    the available GPU it fits on: the smallest service that clears the overflow, else the
    largest that fits; None when none fits elsewhere. A GPU an isolated service has to itself
    stays so: a move must not undo the isolation the plan (Isolation-First) made."""
    placements = [Placement(d.name, d.current_gpu, d.budget_gb) for d in services]
    free = free_mb(gpus, services, placements)
    overflow = -free.get(gpu_index, 0)
    here = sorted((d for d in services if d.current_gpu == gpu_index), key=lambda d: d.effective_mb)
    isolated_alone = {
        g.index
        for g in gpus
        if (on := [d for d in services if d.current_gpu == g.index]) and all(d.isolated for d in on)
    }
    others = [
        g for g in gpus if g.available and g.index != gpu_index and g.index not in isolated_alone
    ]
    fitting = [
        (d, g)
        for d in here
        for g in sorted(others, key=lambda g: -free[g.index])
        if free[g.index] >= d.effective_mb
    ]
    if not fitting:
        return None
    clears = [(d, g) for d, g in fitting if d.effective_mb >= overflow]
    return clears[0] if clears else fitting[-1]
