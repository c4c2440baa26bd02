"""Front room, the GPU Configuration page's view model: the assignment table: choices, per-GPU
summaries with segments, the rows, the strategy a save records.
Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from assignments import planner
from assignments.models import AiService
from assignments.planner.checks import gpu_label
from assignments.planner.types import GpuView, Issue, Placement, ServiceDemand
from assignments.selectors import (
    InactiveService,
    PlanningInput,
    config_preview,
    fallback_issues,
    fallback_messages,
    issues_sourced,
    measured_issues,
    planning_input,
)

SEGMENT_COLOURS = 6  # CSS classes seg-0 … seg-5

# --- the assignment table --------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """What the table shows for one service: saved, or the user's unsaved selection."""

    gpu_index: int | None
    budget_gb: float | None


@dataclass(frozen=True)
class Segment:
    label: str
    mb: int
    percent: float
    colour: int | None  # None: VRAM held by other processes


@dataclass(frozen=True)
class GpuSummary:
    """Planned VRAM on one GPU against its capacity, as stacked segments."""

    gpu: GpuView
    segments: tuple[Segment, ...]
    load_mb: int
    capacity_percent: float  # where the capacity line sits when the bar is over-full
    over_mb: int

    @property
    def free_mb(self) -> int:
        return max(self.gpu.total_mb - self.load_mb, 0)

    @property
    def label(self) -> str:
        return gpu_label(self.gpu)


@dataclass
class Row:
    """One service in the assignment table: saved and shown choice, and its own warnings."""

    service: AiService
    demand: ServiceDemand
    saved: Choice
    chosen: Choice
    colour: int
    issues: list[Issue] = field(default_factory=list)
    fallback_reason: str = ""

    @property
    def changed(self) -> bool:
        return self.saved != self.chosen


@dataclass(frozen=True)
class TableState:
    """The assignment table with the planner's warnings and per-GPU load for its choices."""

    rows: list[Row]
    issues: tuple[Issue, ...]
    summaries: list[GpuSummary]
    unassigned: list[str]
    gpus: tuple[GpuView, ...]
    # Services under inactive compose profiles: listed apart, never in the table or the load.
    inactive: tuple[InactiveService, ...] = ()

    @property
    def dirty(self) -> bool:
        return any(r.changed for r in self.rows)


def saved_choices(data: PlanningInput) -> dict[str, Choice]:
    return {d.name: Choice(d.current_gpu, d.budget_gb) for d in data.services}


def gpu_options(data: PlanningInput) -> list[GpuView]:
    """GPUs a service may be assigned to: the available ones."""
    return [g for g in data.gpus if g.available]


def _summaries(
    gpus: Sequence[GpuView], services: Sequence[ServiceDemand], colours: Mapping[str, int]
) -> list[GpuSummary]:
    out = []
    for gpu in gpus:
        if not gpu.available:
            continue
        parts: list[tuple[str, int, int | None]] = []
        if gpu.foreign_used_mb:
            parts.append(("Other processes", gpu.foreign_used_mb, None))
        for s in services:
            if s.current_gpu == gpu.index:
                parts.append((s.name, s.effective_mb, colours[s.name]))
        load = sum(mb for _, mb, _ in parts)
        scale = max(gpu.total_mb, load, 1)
        out.append(
            GpuSummary(
                gpu=gpu,
                segments=tuple(
                    Segment(label, mb, round(mb / scale * 100, 2), colour)
                    for label, mb, colour in parts
                ),
                load_mb=load,
                capacity_percent=round(gpu.total_mb / scale * 100, 2),
                over_mb=max(load - gpu.total_mb, 0),
            )
        )
    return out


def table_state(
    choices: Mapping[str, Choice] | None = None, *, data: PlanningInput | None = None
) -> TableState:
    """The assignment table for ``choices`` (service → unsaved choice; missing: saved), with the
    planner's warnings for exactly those choices, before anything is saved."""
    data = data or planning_input()
    saved = saved_choices(data)
    chosen = {name: (choices or {}).get(name, saved[name]) for name in saved}
    services = tuple(
        replace(
            d,
            current_gpu=chosen[d.name].gpu_index,
            budget_gb=chosen[d.name].budget_gb if d.budget_adjustable else d.budget_gb,
        )
        for d in data.services
    )
    placements = [
        Placement(s.name, s.current_gpu, s.budget_gb if s.budget_adjustable else None)
        for s in services
    ]
    issues = list(planner.rules_check(data.gpus, services, placements, data.rules))
    issues += issues_sourced(planner.check(data.gpus, services, placements), data)
    issues += measured_issues(data)
    # A fallback stays true only while its row is left as saved.
    issues = [
        i
        for i in fallback_issues(data.assignments)
        if i.service in saved and chosen[i.service] == saved[i.service]
    ] + issues
    colours = {s.name: n % SEGMENT_COLOURS for n, s in enumerate(services)}
    reasons = fallback_messages(data.assignments)
    rows = []
    for demand in services:
        rows.append(
            Row(
                service=data.catalog[demand.name],
                demand=demand,
                saved=saved[demand.name],
                chosen=chosen[demand.name],
                colour=colours[demand.name],
                issues=[i for i in issues if i.service == demand.name],
                fallback_reason=reasons.get(demand.name, ""),
            )
        )
    return TableState(
        rows=rows,
        issues=tuple(issues),
        summaries=_summaries(data.gpus, services, colours),
        unassigned=[s.name for s in services if s.current_gpu is None],
        gpus=data.gpus,
        inactive=data.inactive,
    )


def plan_choices(
    strategy: str, *, keep: Mapping[str, Choice] | None = None, needs: str | None = None
) -> dict[str, Choice]:
    """The choices a strategy proposes (raises UnknownStrategy); budgets are kept from ``keep``
    (the table as the user left it) or the saved ones. ``needs``: see ``planning_input``."""
    plan, data = config_preview(strategy=strategy, needs=needs)
    saved = saved_choices(data)
    budgets = {name: (keep or saved).get(name, saved[name]).budget_gb for name in saved}
    return {
        p.service: Choice(
            p.gpu_index, p.budget_gb if p.budget_gb is not None else budgets[p.service]
        )
        for p in plan.placements
    }
