"""Warnings and VRAM arithmetic for any set of placements.

Used by :func:`~.planning.plan` for every strategy, and by the save path for manual edits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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
    the service has no adjustable budget or not even 0.1 GB would be left. A 4094 MB GPU with
    nothing else on it gives 3.5 GB.
    """
    if isinstance(service, str):
        try:
            service = _services_by_name(services)[service]
        except KeyError:
            raise ValueError(f"unknown service {service!r}") from None
    if not service.budget_adjustable:
        return None
    tenths = _suggested_tenths(_room_mb(gpu, services, placements, service.name))
    ceiling = service.default_budget_gb
    if ceiling is None:
        ceiling = service.need_mb / MB_PER_GB
    tenths = min(tenths, int(round(ceiling * 10, 6)))
    return tenths / 10 if tenths >= 1 else None


def check(
    gpus: Sequence[GpuView], services: Sequence[ServiceDemand], placements: Sequence[Placement]
) -> tuple[Issue, ...]:
    """The warnings for ``placements``, in a stable order.

    Codes: ``unassigned`` (no GPU chosen although one is available), ``unplaced`` (no GPU is
    available at all), ``gpu_missing`` (placed on a GPU that is not present or not available),
    ``over_capacity`` (per GPU), ``budget_too_large`` (a budget override the GPU cannot give)
    and ``budget_suggestion`` (the default budget does not fit; ``suggested_budget_gb`` does).
    """
    by_name = _services_by_name(services)
    placed = {p.service: p for p in placements}
    for placement in placements:
        _service(by_name, placement)
    return (
        *_placement_issues(gpus, services, placed),
        *_capacity_issues(gpus, services, placed),
        *_budget_issues(gpus, services, placements),
    )


def _placement_issues(
    gpus: Sequence[GpuView], services: Sequence[ServiceDemand], placed: dict[str, Placement]
) -> Iterator[Issue]:
    """``unassigned``, ``unplaced`` and ``gpu_missing``, service by service."""
    by_index = {g.index: g for g in gpus}
    any_usable = bool(usable_gpus(gpus))
    for service in services:
        placement = placed.get(service.name)
        index = placement.gpu_index if placement is not None else None
        name = service.name
        if index is None and any_usable:
            yield Issue("unassigned", f"{name} has no GPU assigned.", service=name)
        elif index is None:
            message = f"{name} could not be placed: no GPU is available."
            yield Issue("unplaced", message, service=name)
        elif index not in by_index:
            message = f"{name} is assigned to GPU {index}, which is not present."
            yield Issue("gpu_missing", message, service=name, gpu_index=index)
        elif not by_index[index].available:
            message = f"{name} is assigned to {gpu_label(by_index[index])}, which is not available."
            yield Issue("gpu_missing", message, service=name, gpu_index=index)


def _capacity_issues(
    gpus: Sequence[GpuView], services: Sequence[ServiceDemand], placed: dict[str, Placement]
) -> Iterator[Issue]:
    """``over_capacity``, available GPU by GPU."""
    for gpu in sorted(gpus, key=lambda g: g.index):
        if not gpu.available:
            continue
        on_gpu = [
            (s, placed[s.name])
            for s in services
            if s.name in placed and placed[s.name].gpu_index == gpu.index
        ]
        load = gpu.foreign_used_mb + sum(need_mb(s, p) for s, p in on_gpu)
        if on_gpu and load > gpu.total_mb:
            needs = ", ".join(f"{s.name} needs {gb(need_mb(s, p))} GB" for s, p in on_gpu)
            room = gpu.total_mb - gpu.foreign_used_mb
            yield Issue(
                "over_capacity",
                f"{gpu_label(gpu)} is over capacity by {gb_up(load - gpu.total_mb)} GB: "
                f"{needs}, {gb(max(room, 0))} GB available.",
                gpu_index=gpu.index,
            )


def _budget_issues(
    gpus: Sequence[GpuView], services: Sequence[ServiceDemand], placements: Sequence[Placement]
) -> Iterator[Issue]:
    """``budget_too_large`` and ``budget_suggestion`` for budget-adjustable services that do not
    fit the room their GPU has left."""
    by_index = {g.index: g for g in gpus}
    placed = {p.service: p for p in placements}
    for service in services:
        placement = placed.get(service.name)
        if placement is None or not service.budget_adjustable:
            continue
        gpu = by_index.get(placement.gpu_index)
        if gpu is None or not gpu.available:
            continue
        room = _room_mb(gpu, services, placements, service.name)
        need = need_mb(service, placement)
        if need <= room:
            continue
        suggestion = suggest_budget_gb(gpu, services, placements, service)
        explicit = placement.budget_gb if placement.budget_gb is not None else service.budget_gb
        where = dict(service=service.name, gpu_index=gpu.index, suggested_budget_gb=suggestion)
        if explicit is not None:
            use = f" Use {suggestion:.1f} GB instead." if suggestion is not None else ""
            yield Issue(
                "budget_too_large",
                f"The VRAM budget of {service.name} ({gb(need)} GB) is more than "
                f"{gpu_label(gpu)} can give it ({gb(max(room, 0))} GB).{use}",
                **where,
            )
        elif suggestion is not None:
            yield Issue(
                "budget_suggestion",
                f"{service.name} needs {gb(need)} GB but {gpu_label(gpu)} can give it "
                f"{gb(max(room, 0))} GB: set its VRAM budget to {suggestion:.1f} GB.",
                **where,
            )


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


def _suggested_tenths(room: int) -> int:
    return _tenths_nearest(room - HEADROOM_MB)


def _room_mb(
    gpu: GpuView, services: Sequence[ServiceDemand], placements: Sequence[Placement], name: str
) -> int:
    """What ``gpu`` can give one service after its foreign use and the others placed on it."""
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
