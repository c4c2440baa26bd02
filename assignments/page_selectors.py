"""Reads for the GPU Configuration page: the existing selectors and the planner, shaped for
the templates (cards with sparklines, the assignment table, per-GPU summaries, previews, the
apply diff and progress). Nothing here writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from assignments import planner
from assignments.applying import devices_differ, same_budget
from assignments.models import AiService, ApplyRun, ConfigVersion, GpuConfig
from assignments.planner.checks import gpu_label
from assignments.planner.types import GpuView, Issue, Placement, ServiceDemand
from assignments.runtime.base import Step
from assignments.selectors import (
    InactiveService,
    PlanningInput,
    apply_run_list,
    config_preview,
    config_state_cached,
    fallback_issues,
    fallback_messages,
    issues_sourced,
    measured_issues,
    planning_input,
    planning_input_cached,
    run_stall,
    version_list,
)
from gpus.models import Gpu, GpuProcess, GpuSample
from gpus.selectors import (
    INVENTORY_READ_TTL,
    NO_GPUS_DETAIL,
    TROUBLESHOOTING,
    gpu_list,
    gpu_samples,
    inventory_read_cached,
    last_scan,
)
from gpus.units import MB_PER_GB

SPARK_WIDTH = 120
SPARK_HEIGHT = 28
SEGMENT_COLOURS = 6  # CSS classes seg-0 … seg-5


# --- GPU cards -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sparkline:
    """Two polylines (utilisation and VRAM, in %) in a ``SPARK_WIDTH`` × ``SPARK_HEIGHT`` box."""

    util_points: str
    vram_points: str
    count: int
    width: int = SPARK_WIDTH
    height: int = SPARK_HEIGHT

    @property
    def mid(self) -> float:
        """The y of the 50 % grid line."""
        return _y(50)

    @property
    def bottom(self) -> float:
        return _y(0)


@dataclass(frozen=True)
class GpuCard:
    """One GPU as its card shows it."""

    gpu: Gpu
    total_gb: float | None
    used_percent: int
    sparkline: Sparkline | None
    # Processes of the last scan that belong to no managed service, largest first.
    others: tuple[GpuProcess, ...] = ()


def _points(values: Sequence[float | None]) -> str:
    """SVG polyline points for percentages (0–100) spread over the sparkline's width."""
    known = [(i, v) for i, v in enumerate(values) if v is not None]
    if not known:
        return ""
    if len(values) == 1:
        # One reading: a flat line, so a fresh inventory still shows its level.
        value = known[0][1]
        y = _y(value)
        return f"0,{y} {SPARK_WIDTH},{y}"
    step = SPARK_WIDTH / (len(values) - 1)
    return " ".join(f"{round(i * step, 1)},{_y(v)}" for i, v in known)


def _y(percent: float) -> float:
    percent = min(max(percent, 0.0), 100.0)
    # 1 px margin top and bottom so the stroke is never clipped.
    return round(1 + (100 - percent) / 100 * (SPARK_HEIGHT - 2), 1)


def sparkline(gpu: Gpu, samples: Sequence[GpuSample]) -> Sparkline | None:
    if not samples:
        return None
    total = gpu.vram_total_mb or 0
    util = [s.utilization_percent for s in samples]
    vram = [
        (s.vram_used_mb / total * 100) if total and s.vram_used_mb is not None else None
        for s in samples
    ]
    return Sparkline(util_points=_points(util), vram_points=_points(vram), count=len(samples))


def gpu_cards() -> dict:
    """The GPU cards: present GPUs first, then lost ones greyed, each with its sparkline. Kept
    in the cache until the inventory changes or the oldest sample shown leaves the window."""
    return inventory_read_cached("cards", _gpu_cards, ttl=_cards_ttl)


def _cards_ttl(cards: dict) -> float:
    oldest = cards["oldest_sample_at"]
    if oldest is None:
        return INVENTORY_READ_TTL
    window_end = oldest + timedelta(seconds=settings.GPUCONFIG_SAMPLE_RETENTION)
    return (window_end - timezone.now()).total_seconds()


def _gpu_cards() -> dict:
    gpus = list(gpu_list())
    samples = gpu_samples(gpu_ids=[g.pk for g in gpus])
    cards = [
        GpuCard(
            gpu=g,
            total_gb=g.vram_total_gb,
            used_percent=round(g.vram_used_fraction * 100),
            sparkline=sparkline(g, samples.get(g.pk, [])),
            others=tuple(
                sorted(
                    (p for p in g.processes.all() if not p.service),
                    key=lambda p: (-p.used_mb, p.pid),
                )
            ),
        )
        for g in gpus
    ]
    scan = last_scan() or {}
    return {
        "cards": cards,
        "no_gpus": not any(g.available for g in gpus),
        "no_gpus_detail": NO_GPUS_DETAIL,
        "troubleshooting": TROUBLESHOOTING,
        "last_scan_at": parse_datetime(scan["finished_at"]) if scan.get("finished_at") else None,
        "last_scan_backend": scan.get("backend"),
        "last_scan_error": scan.get("error"),
        "oldest_sample_at": min(
            (shown[0].taken_at for shown in samples.values() if shown), default=None
        ),
    }


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


def strategy_to_save(strategy: str, choices: Mapping[str, Choice]) -> str:
    """The strategy a save of ``choices`` records: ``strategy`` while the table shows its plan
    (or is left as saved under it), else ``manual``: an edited plan is the user's own."""
    if strategy == "manual" or strategy not in planner.STRATEGIES:
        return strategy
    data = planning_input()
    if strategy == current_strategy() and dict(choices) == saved_choices(data):
        return strategy
    try:
        proposed = plan_choices(strategy, keep=choices)
    except planner.UnknownStrategy:
        return strategy
    same = all(
        proposed.get(name, choice).gpu_index == choice.gpu_index
        and same_budget(proposed.get(name, choice).budget_gb, choice.budget_gb)
        for name, choice in choices.items()
    )
    return strategy if same else "manual"


# --- problems: one per problem, each with the fixes the page can offer ------------------------


@dataclass(frozen=True)
class Fix:
    """A one-click fix: put ``value`` into the field of ``service`` (its budget or its GPU)."""

    label: str
    service: str
    kind: str  # "budget" or "gpu"
    value: str


@dataclass(frozen=True)
class Problem:
    code: str
    severity: str  # "error" or "warning"
    message: str
    fixes: tuple[Fix, ...] = ()
    details: tuple[str, ...] = ()


SEVERE = {"over_capacity", "gpu_missing", "unplaced", "budget_too_large"}


def _move_fix(gpu_index: int, table: TableState) -> Fix | None:
    """Move one service off an over-full GPU onto another available GPU where it fits; the
    smallest service that clears the overflow, else the largest that fits."""
    services = [r.demand for r in table.rows]
    placements = [Placement(d.name, d.current_gpu, d.budget_gb) for d in services]
    free = planner.free_mb(table.gpus, services, placements)
    overflow = -free.get(gpu_index, 0)
    here = sorted((d for d in services if d.current_gpu == gpu_index), key=lambda d: d.effective_mb)
    # A GPU an isolated service has to itself stays so: a fix must not undo the isolation the
    # plan (Isolation-First) made.
    isolated_alone = {
        g.index
        for g in table.gpus
        if (on := [d for d in services if d.current_gpu == g.index]) and all(d.isolated for d in on)
    }
    others = [
        g
        for g in table.gpus
        if g.available and g.index != gpu_index and g.index not in isolated_alone
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
    demand, gpu = clears[0] if clears else fitting[-1]
    return Fix(f"Move {demand.name} to GPU {gpu.index}", demand.name, "gpu", str(gpu.index))


def problems(table: TableState) -> list[Problem]:
    """The table's warnings, one per problem: a GPU's over-capacity and the budget warnings of
    the services on it are one problem, whose fixes are the suggested budget and a move."""
    out: list[Problem] = []
    by_gpu: dict[int, list[Issue]] = {}
    seen: set[str] = set()
    for issue in table.issues:
        if issue.message in seen:
            continue
        seen.add(issue.message)
        if issue.code in ("over_capacity", "budget_suggestion", "budget_too_large"):
            gpu = issue.gpu_index
            if gpu is None and issue.service:
                gpu = next(
                    (r.chosen.gpu_index for r in table.rows if r.service.name == issue.service),
                    None,
                )
            if gpu is not None:
                by_gpu.setdefault(gpu, []).append(issue)
                continue
        out.append(
            Problem(issue.code, "error" if issue.code in SEVERE else "warning", issue.message)
        )
    for gpu, issues in sorted(by_gpu.items()):
        main = next((i for i in issues if i.code == "over_capacity"), issues[0])
        fixes = [
            Fix(
                f"Use {i.suggested_budget_gb:.1f} GB",
                i.service,
                "budget",
                f"{i.suggested_budget_gb:.1f}",
            )
            for i in issues
            if i.suggested_budget_gb is not None and i.service
        ]
        if any(i.code == "over_capacity" for i in issues):
            move = _move_fix(gpu, table)
            if move is not None:
                fixes.append(move)
        out.insert(
            0,
            Problem(
                main.code,
                "error" if any(i.code in SEVERE for i in issues) else "warning",
                main.message,
                tuple(fixes),
                tuple(i.message for i in issues if i is not main),
            ),
        )
    return out


# --- the status strip ------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusStrip:
    """The state in one line: where the GPUs come from, how many, the problems, the last apply
    and the container runtime (from the worker's stored copy; no engine call)."""

    simulated: bool
    backend: str
    gpus_present: int
    gpus_lost: int
    problem_count: int
    apply_run: ApplyRun | None
    runtime_label: str
    engine_reachable: bool | None
    engine_error: str

    @property
    def apply_state(self) -> str:
        run = self.apply_run
        if run is None:
            return "Never applied"
        if not run.is_finished:
            return "Apply stalled: no worker" if run_stall(run) else "Applying…"
        return f"Last apply {run.get_status_display().lower()}"

    @property
    def apply_tone(self) -> str:
        run = self.apply_run
        if run is None:
            return "muted"
        if not run.is_finished:
            return "busy"
        return "ok" if run.status == ApplyRun.Status.SUCCEEDED else "bad"


def _gpu_counts() -> tuple[int, int]:
    """How many GPUs are present, and how many lost."""
    gpus = list(gpu_list())
    return sum(g.available for g in gpus), sum(not g.available for g in gpus)


def status_strip(*, problem_count: int) -> StatusStrip:
    from assignments.live import live_cached
    from assignments.selectors import apply_run_latest
    from gpus.selectors import detection_mode

    mode = detection_mode()
    present, lost = inventory_read_cached("counts", _gpu_counts)
    live = live_cached() or {}
    return StatusStrip(
        simulated=mode["simulated"],
        backend=mode["backend"] or "",
        gpus_present=present,
        gpus_lost=lost,
        problem_count=problem_count,
        apply_run=apply_run_latest(),
        runtime_label=live.get("runtime_label", ""),
        engine_reachable=live.get("reachable"),
        engine_error=live.get("error", ""),
    )


# --- the services panel ----------------------------------------------------------------------

HEALTH_TONE = {"healthy": "ok", "unhealthy": "bad", "starting": "busy"}
STATUS_TONE = {"running": "ok", "exited": "bad", "dead": "bad", "restarting": "busy"}


@dataclass(frozen=True)
class Usage:
    """A service's measured VRAM for its line in the services panel: "uses 6.1 GB now · peak
    7.0 GB (24 h) · budget 6.8 GB", with a bar of now and peak against the limit."""

    now_mb: int
    peak_mb: int
    window_h: int
    limit_mb: int | None
    limit_label: str  # "budget" or "need"

    @property
    def over(self) -> bool:
        return self.limit_mb is not None and self.peak_mb > self.limit_mb

    def _percent(self, mb: int) -> int:
        scale = max(self.limit_mb or 0, self.peak_mb, 1)
        return min(round(mb / scale * 100), 100)

    @property
    def now_percent(self) -> int:
        return self._percent(self.now_mb)

    @property
    def peak_percent(self) -> int:
        return self._percent(self.peak_mb)

    @property
    def limit_percent(self) -> int | None:
        return None if self.limit_mb is None else self._percent(self.limit_mb)


def usage_of(demand, summary) -> Usage | None:
    """The usage line of one service (``demand``: its ServiceDemand), None when unmeasured."""
    if summary is None:
        return None
    budget = demand.budget_gb if demand.budget_gb is not None else demand.default_budget_gb
    if demand.budget_adjustable and budget is not None:
        limit, label = round(budget * MB_PER_GB), "budget"
    else:
        limit, label = demand.catalog_mb or demand.need_mb, "need"
    return Usage(
        now_mb=summary.now_mb,
        peak_mb=summary.peak_mb,
        window_h=max(round(summary.window_s / 3600), 1),
        limit_mb=limit,
        limit_label=label,
    )


@dataclass(frozen=True)
class ServiceRow:
    name: str
    status: str
    health: str
    gpu_label: str
    runtime: str
    restart_status: str | None
    started_at: object
    last_apply: str | None
    colour: int
    pending_apply: bool = False
    assigned_label: str = ""
    usage: Usage | None = None

    @property
    def status_tone(self) -> str:
        return STATUS_TONE.get(self.status, "muted")

    @property
    def health_tone(self) -> str:
        return HEALTH_TONE.get(self.health, "muted")

    @property
    def restart_label(self) -> str:
        return STEP_LABELS.get(self.restart_status or "", "")

    @property
    def last_apply_label(self) -> str:
        return STEP_LABELS.get(self.last_apply or "", "–")


def _running_on(gpus: Mapping[int, GpuView], row: dict) -> str:
    """Where the container runs (its device request); "–" without a container, as the API's
    null ``gpu_index`` (the saved GPU is shown apart, while it differs)."""
    devices = row.get("device_ids")
    if devices is None:
        return "–"
    if not devices:
        return "No GPU"
    by_id = {str(g.index): g for g in gpus.values()} | {g.uuid: g for g in gpus.values()}
    return ", ".join(gpu_label(by_id[d]) if d in by_id else f"GPU {d}" for d in devices)


def services_panel(*, data: PlanningInput | None = None, status: dict | None = None) -> dict:
    """The services panel from the stored container state and the latest apply's progress
    (``data``, ``status``: the planning input and ``apply_status(live=False)``, if read)."""
    from assignments.live import NO_ENGINE_HELP, live_cached
    from assignments.runtime.simulated import LABEL as SIMULATED_LABEL
    from assignments.runtime.simulated import simulated_runtime_enabled
    from assignments.selectors import apply_status
    from gpus.selectors import detection_mode

    data = data or planning_input_cached()
    status = status or apply_status(live=False, data=data)
    live = live_cached()
    gpus = {g.index: g for g in data.gpus}
    colours = {d.name: n % SEGMENT_COLOURS for n, d in enumerate(data.services)}
    demands = {d.name: d for d in data.services}
    label = (live or {}).get("runtime_label", "")
    rows = [
        ServiceRow(
            name=r["name"],
            status=r["status"],
            health=r["health"],
            gpu_label=_running_on(gpus, r),
            pending_apply=r["pending_apply"],
            assigned_label=gpu_name(gpus, r["assigned_gpu_index"]),
            runtime=label,
            restart_status=r["restart_status"] if status["in_progress"] else None,
            started_at=r["started_at"],
            last_apply=r["last_apply"],
            colour=colours.get(r["name"], 0),
            usage=usage_of(demands[r["name"]], data.measured.get(r["name"]))
            if r["name"] in demands
            else None,
        )
        for r in status["services"]
    ]
    return {
        "rows": rows,
        "in_progress": status["in_progress"],
        "checked": live is not None,
        "reachable": (live or {}).get("reachable"),
        "error": (live or {}).get("error", ""),
        "help": NO_ENGINE_HELP,
        "runtime_label": label,
        "demo_on": simulated_runtime_enabled(),
        "demo_offered": detection_mode()["simulated"],
        "demo_label": SIMULATED_LABEL,
        "inactive": data.inactive,
    }


# --- strategies and the preview --------------------------------------------------------------


def strategy_list() -> list[planner.Strategy]:
    return list(planner.STRATEGIES.values())


def current_strategy() -> str:
    """The saved strategy, kept in the cache under the configuration's state."""
    return config_state_cached("strategy", lambda: GpuConfig.load().strategy)


def gpu_name(gpus: Mapping[int, GpuView], index: int | None) -> str:
    """``GPU 1 (RTX A400)``, or ``Unassigned``."""
    return "Unassigned" if index is None else gpu_label(gpus.get(index), index)


@dataclass(frozen=True)
class PreviewRow:
    service: str
    current: int | None
    proposed: int | None
    current_label: str
    proposed_label: str

    @property
    def changed(self) -> bool:
        return self.current != self.proposed


@dataclass(frozen=True)
class Preview:
    strategy: planner.Strategy
    rows: list[PreviewRow]
    issues: tuple[Issue, ...]
    gpus: dict[int, GpuView]

    @property
    def changed_count(self) -> int:
        return sum(r.changed for r in self.rows)


def preview(strategy: str, *, needs: str | None = None) -> Preview:
    """The proposed assignment of ``strategy`` next to the saved one (raises UnknownStrategy)."""
    plan, data = config_preview(strategy=strategy, needs=needs)
    current = {d.name: d.current_gpu for d in data.services}
    gpus = {g.index: g for g in data.gpus}
    return Preview(
        strategy=planner.STRATEGIES[plan.strategy],
        rows=[
            PreviewRow(
                p.service,
                current.get(p.service),
                p.gpu_index,
                gpu_name(gpus, current.get(p.service)),
                gpu_name(gpus, p.gpu_index),
            )
            for p in plan.placements
        ],
        issues=plan.issues,
        gpus=gpus,
    )


# --- applying --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyChange:
    service: str
    current_devices: tuple[str, ...] | None  # None: no container
    target_devices: tuple[str, ...]
    current_budget: float | None
    target_budget: float | None
    restart: bool
    # How it would move (assignments/moves.py): "zero_downtime" or "restart", and why.
    move_mode: str = ""
    move_reason: str = ""

    @property
    def move_label(self) -> str:
        return MOVE_LABELS.get(self.move_mode, "")

    @property
    def missing(self) -> bool:
        return self.current_devices is None

    @property
    def devices_changed(self) -> bool:
        return self.current_devices is not None and devices_differ(
            self.current_devices, self.target_devices
        )

    @property
    def budget_changed(self) -> bool:
        if self.current_devices is None:
            return False
        return not same_budget(self.current_budget, self.target_budget)


@dataclass(frozen=True)
class ApplyPlan:
    """What Apply would do now: the services whose GPU or budget differs from what runs."""

    changes: list[ApplyChange]
    error: str = ""
    runtime: str = ""  # the engine that would do it, in words ("Podman at unix://...")

    @property
    def restarts(self) -> list[ApplyChange]:
        return [c for c in self.changes if c.restart]

    @property
    def missing(self) -> list[ApplyChange]:
        return [c for c in self.changes if c.missing]


def apply_plan() -> ApplyPlan:
    """Compare the saved configuration with the running containers (asks the engine)."""
    from assignments.applying import diff
    from assignments.moves import apply_move_modes
    from assignments.runtime import get_runtime
    from assignments.runtime.base import EngineError, RuntimeUnavailable
    from assignments.selectors import apply_targets

    try:
        runtime = get_runtime()
        changes = diff(runtime, apply_targets())
        modes = apply_move_modes(runtime, changes)
    except RuntimeUnavailable as exc:
        return ApplyPlan(changes=[], error=f"Cannot reach the container engine: {exc}")
    except EngineError as exc:
        return ApplyPlan(changes=[], error=f"The container engine refused a request: {exc}")
    return ApplyPlan(
        changes=[
            ApplyChange(
                service=c.service,
                current_devices=c.current.device_ids if c.current else None,
                target_devices=c.target.device_ids,
                current_budget=c.current.budget_gb if c.current else None,
                target_budget=c.target.budget_gb,
                restart=c.needs_recreate,
                move_mode=modes[c.service].mode if c.service in modes else "",
                move_reason=modes[c.service].reason if c.service in modes else "",
            )
            for c in changes
        ],
        runtime=engine_label(runtime.label, runtime.where),
    )


MOVE_LABELS = {"zero_downtime": "Without downtime", "restart": "Restart"}


def engine_label(display_name: str, where: str) -> str:
    """The engine in use, in words: "Podman at unix:///run/podman/podman.sock"."""
    return f"{display_name} at {where}" if where else display_name


STEP_LABELS = {
    Step.PENDING: "Waiting",
    Step.STOPPING: "Stopping",
    Step.RECREATING: "Recreating",
    Step.STARTING: "Starting",
    Step.WAITING_HEALTH: "Waiting for health",
    Step.HEALTHY: "Healthy",
    Step.ROLLED_BACK: "Rolled back",
    Step.FAILED: "Failed",
    Step.UNCHANGED: "Unchanged",
    Step.INTERRUPTED: "Interrupted",
}
STEP_TONE = {
    Step.HEALTHY: "ok",
    Step.UNCHANGED: "muted",
    Step.ROLLED_BACK: "bad",
    Step.FAILED: "bad",
    Step.INTERRUPTED: "bad",
}


@dataclass(frozen=True)
class ProgressRow:
    service: str
    status: str
    message: str
    elapsed_s: float | None
    container: str
    move_mode: str = ""
    move_reason: str = ""
    downtime_s: float | None = None

    @property
    def move_label(self) -> str:
        return MOVE_LABELS.get(self.move_mode, "")

    @property
    def label(self) -> str:
        return STEP_LABELS.get(self.status, self.status.replace("_", " ").capitalize())

    @property
    def tone(self) -> str:
        return STEP_TONE.get(self.status, "busy")


@dataclass(frozen=True)
class Progress:
    run: ApplyRun | None
    in_progress: bool
    rows: list[ProgressRow]
    failures: list[tuple[str, str, str]]  # service, outcome, message
    stall: str = ""  # why an unfinished run does not move (no worker), else empty

    @property
    def finished(self) -> bool:
        return not self.in_progress

    @property
    def restarted(self) -> list[str]:
        return [r.service for r in self.rows if r.status == "healthy"]


_ROLLED_BACK_SAID = (
    re.compile(r"^rolled back to the previous container:\s*", re.I),
    re.compile(r"\s*The previous [^.]*? was restored\.", re.I),
)


def rollback_reason(message: str) -> str:
    """A rolled-back service's message without its own "rolled back / restored" words: the
    page says that once ("was rolled back to its previous container: <reason>")."""
    for said in _ROLLED_BACK_SAID:
        message = said.sub("", message, count=1)
    return message.strip() or "no reason given"


def apply_progress(status: dict) -> Progress:
    """Shape ``services.apply_status()`` for the progress table."""
    run: ApplyRun | None = status["run"]
    live = {s["name"]: s for s in status["services"]}

    def container(name: str) -> str:
        s = live.get(name)
        if not s:
            return ""
        return f"{s['status']}, {s['health']}" if s.get("health") else s["status"]

    rows = [
        ProgressRow(
            e["service"],
            e["status"],
            e.get("message") or "",
            e.get("elapsed_s"),
            container(e["service"]),
            e.get("move_mode") or "",
            e.get("move_reason") or "",
            e.get("downtime_s"),
        )
        for e in status["service_statuses"]
    ]
    failures = []
    if run is not None:
        for service, result in sorted((run.results or {}).items()):
            outcome, message = result.get("outcome", ""), result.get("message", "")
            if outcome != "healthy":
                if outcome == "rolled_back":
                    message = rollback_reason(message)
                failures.append((service, outcome, message))
    return Progress(
        run=run,
        in_progress=status["in_progress"],
        rows=rows,
        failures=failures,
        stall=status.get("stall", ""),
    )


# --- history ---------------------------------------------------------------------------------


def history(*, limit: int = 10) -> dict:
    """The latest saved versions and apply runs, kept in the cache while neither changed
    (versions under the configuration's state, runs under the runs state)."""
    from assignments.run_reads import runs_read_cached

    versions: list[ConfigVersion] = config_state_cached(
        f"history-versions:{limit}", lambda: list(version_list(limit=limit))
    )
    runs: list[ApplyRun] = runs_read_cached(
        f"history-runs:{limit}",
        lambda: list(apply_run_list(limit=limit).defer("log", "journal")),
    )
    return {"versions": versions, "runs": runs}
