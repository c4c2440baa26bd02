"""Reads: the catalog, the saved configuration, and the planner's view of both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet

from assignments import files, planner, progress
from assignments.applying import Target
from assignments.models import AiService, ApplyRun, Assignment, ConfigVersion, GpuConfig
from assignments.planner.checks import gpu_label
from assignments.planner.placing import need_mb
from assignments.planner.types import GpuView, Issue, Placement, ServiceDemand
from gpus.models import Gpu


def service_list(*, enabled_only: bool = True) -> QuerySet[AiService]:
    qs = AiService.objects.all()
    if enabled_only:
        qs = qs.filter(enabled=True)
    return qs.order_by("sort_order", "name")


def assignment_map() -> dict[str, Assignment]:
    """Saved assignments by service name."""
    return {a.service.name: a for a in Assignment.objects.select_related("service")}


def _gpu_view(gpu: Gpu, assigned_mb: int) -> GpuView:
    used = gpu.vram_used_mb or 0
    return GpuView(
        index=gpu.index,
        uuid=gpu.uuid,
        name=gpu.name,
        total_mb=gpu.vram_total_mb or 0,
        # VRAM in use that the services assigned here do not explain belongs to someone else.
        foreign_used_mb=max(used - assigned_mb, 0),
        compute_capability=(gpu.compute_capability_major or 0, gpu.compute_capability_minor or 0),
        available=gpu.available,
    )


@dataclass(frozen=True)
class PlanningInput:
    """Everything the planner needs, read from the database in one go."""

    gpus: tuple[GpuView, ...]
    services: tuple[ServiceDemand, ...]
    catalog: dict[str, AiService]
    assignments: dict[str, Assignment]

    def current_placements(self) -> list[Placement]:
        return [Placement(s.name, s.current_gpu, s.budget_gb) for s in self.services]


def compose_report(*, tool: str | None = None) -> dict:
    """What each managed service gets under the compose tool (``tool``: another kind than the
    one in use); raises ``UnknownTool`` for a name that is not a tool."""
    from assignments.compose.project import compose_check

    return compose_check(config_entries(), tool_name=tool)


def planning_input() -> PlanningInput:
    from assignments.compose.project import base_budgets

    services = list(service_list())
    # A service's default budget is the base compose file's VRAM_BUDGET_GB when it sets one.
    base_budget = base_budgets()
    assignments = assignment_map()
    demands = []
    for svc in services:
        a = assignments.get(svc.name)
        demands.append(
            ServiceDemand(
                name=svc.name,
                need_mb=svc.vram_required_mb,
                latency_critical=svc.latency_critical,
                isolated=svc.isolated,
                budget_adjustable=svc.budget_adjustable,
                default_budget_gb=base_budget.get(svc.name, svc.default_budget_gb)
                if svc.budget_adjustable
                else svc.default_budget_gb,
                min_budget_gb=svc.min_budget_gb,
                current_gpu=a.effective_gpu_index if a else None,
                budget_gb=a.vram_budget_override if a else None,
            )
        )
    # Only present GPUs hold a unique index; a lost one is shown to the planner as unavailable
    # unless a present GPU has taken its index.
    rows = list(Gpu.objects.order_by("-available", "index"))
    seen: set[int] = set()
    gpus = []
    for gpu in rows:
        if gpu.index in seen:
            continue
        seen.add(gpu.index)
        assigned = sum(d.effective_mb for d in demands if d.current_gpu == gpu.index)
        gpus.append(_gpu_view(gpu, assigned))
    gpus.sort(key=lambda g: g.index)
    return PlanningInput(
        gpus=tuple(gpus),
        services=tuple(demands),
        catalog={s.name: s for s in services},
        assignments=assignments,
    )


def fallback_message(name: str, assignment: Assignment, gpus: Mapping[str, Gpu]) -> str:
    """The sentence for an active fallback, composed from its data (``gpus``: rows by UUID)."""
    lost = gpus.get(assignment.lost_gpu_uuid) if assignment.lost_gpu_uuid else None
    lost_label = gpu_label(lost, assignment.gpu_index)
    target = gpus.get(assignment.fallback_gpu_uuid) if assignment.fallback_gpu_uuid else None
    if target is None:
        return f"{name}: {lost_label} is unavailable and no GPU is left; the service is not placed."
    return (
        f"{name}: {lost_label} is unavailable; falling back to {gpu_label(target)} "
        "until it returns."
    )


def fallback_messages(assignments: Mapping[str, Assignment]) -> dict[str, str]:
    """The fallback sentence of each service that is falling back, by service name."""
    active = {name: a for name, a in assignments.items() if a.is_falling_back}
    if not active:
        return {}
    gpus = {g.uuid: g for g in Gpu.objects.all()}
    return {name: fallback_message(name, a, gpus) for name, a in active.items()}


def fallback_issues(assignments: Mapping[str, Assignment]) -> list[Issue]:
    messages = fallback_messages(assignments)
    return [
        Issue(
            code="fallback",
            message=message,
            service=name,
            gpu_index=assignments[name].fallback_gpu_index,
        )
        for name, message in messages.items()
    ]


def config_issues(data: PlanningInput | None = None) -> list[Issue]:
    """Warnings for the saved configuration: the planner's checks plus active fallbacks."""
    data = data or planning_input()
    issues = list(planner.check(data.gpus, data.services, data.current_placements()))
    return fallback_issues(data.assignments) + issues


ERROR_CODES = frozenset({"over_capacity", "gpu_missing", "unplaced", "budget_too_large"})


def issue_details(
    issues, *, gpus: tuple[GpuView, ...], placements: list[Placement], services
) -> list[dict]:
    """Structured warnings for API clients: each issue with its severity and the VRAM figures
    behind it (``needed_mb`` against ``available_mb`` on its GPU, when it concerns one)."""
    free = planner.free_mb(gpus, services, placements)
    usable = {g.index: g.total_mb - g.foreign_used_mb for g in gpus}
    by_name = {s.name: s for s in services}
    placed = {p.service: p for p in placements}
    out = []
    for issue in issues:
        needed = getattr(issue, "needed_mb", None)
        available = getattr(issue, "available_mb", None)
        index = issue.gpu_index
        if index is None and issue.service in placed:
            index = placed[issue.service].gpu_index
        if needed is None and index in free:
            demand = by_name.get(issue.service) if issue.service else None
            if demand is not None:
                needed = need_mb(demand, placed.get(demand.name))
                available = max(free[index] + needed, 0)
            else:
                needed = usable[index] - free[index]
                available = max(usable[index], 0)
        out.append(
            {
                "code": issue.code,
                "severity": getattr(issue, "severity", None)
                or ("error" if issue.code in ERROR_CODES else "warning"),
                "service": issue.service,
                "gpu_index": index,
                "needed_mb": needed,
                "available_mb": available,
                "suggested_budget_gb": issue.suggested_budget_gb,
                "message": issue.message,
            }
        )
    return out


def config_current() -> dict:
    """The saved configuration in the API's shape."""
    config = GpuConfig.load()
    data = planning_input()
    issues = config_issues(data)
    return {
        "strategy": config.strategy,
        "strategies": planner.strategy_names(),
        "assignments": [
            {
                "service": d.name,
                "gpu_index": d.current_gpu,
                "vram_budget_override": d.budget_gb,
            }
            for d in data.services
        ],
        "warnings": [issue.message for issue in issues],
        "warning_details": issue_details(
            issues,
            gpus=data.gpus,
            placements=data.current_placements(),
            services=data.services,
        ),
        "updated_at": config.updated_at,
    }


def plan_details(plan: planner.Plan, data: PlanningInput) -> list[dict]:
    """``issue_details`` for a strategy's plan."""
    return issue_details(
        plan.issues, gpus=data.gpus, placements=list(plan.placements), services=data.services
    )


def config_preview(*, strategy: str) -> tuple[planner.Plan, PlanningInput]:
    """What ``strategy`` would do with the current inventory (raises UnknownStrategy)."""
    data = planning_input()
    return planner.plan(strategy, data.gpus, data.services), data


def version_list(*, limit: int = 10) -> QuerySet[ConfigVersion]:
    return ConfigVersion.objects.select_related("created_by")[:limit]


def apply_run_list(*, limit: int = 10) -> QuerySet[ApplyRun]:
    return ApplyRun.objects.select_related("requested_by")[:limit]


def apply_run_latest() -> ApplyRun | None:
    return ApplyRun.objects.order_by("-created_at", "-pk").first()


def config_entries(data: PlanningInput | None = None) -> list[files.FileEntry]:
    """Each enabled service's line in the generated files, as saved (fallbacks applied)."""
    data = data or planning_input()
    gpus = {g.uuid: g for g in Gpu.objects.all()}
    reasons = fallback_messages(data.assignments)
    entries = []
    for d in data.services:
        a = data.assignments.get(d.name)
        uuid = a.effective_gpu_uuid if a else ""
        gpu = gpus.get(uuid)
        entries.append(
            files.FileEntry(
                service=d.name,
                gpu_index=d.current_gpu,
                gpu_uuid=uuid,
                gpu_name=gpu.name if gpu else "",
                budget_gb=d.budget_gb if d.budget_gb is not None else d.default_budget_gb,
                budget_adjustable=d.budget_adjustable,
                fallback_reason=reasons.get(d.name, ""),
                budget_saved=d.budget_gb is not None,
            )
        )
    return entries


def apply_targets(data: PlanningInput | None = None) -> list[Target]:
    """What each enabled service should run with: device ids (in the configured format), its
    VRAM budget when one is saved, and the compose labels of the written files."""
    from assignments.compose.project import config_labels

    data = data or planning_input()
    id_format = settings.GPUCONFIG_DEVICE_ID_FORMAT
    entries = config_entries(data)
    labels = config_labels(entries)
    targets = []
    for entry, demand in zip(entries, data.services, strict=True):
        device_ids = () if entry.gpu_index is None else (files.device_id(entry, id_format),)
        targets.append(
            Target(
                service=entry.service,
                device_ids=device_ids,
                budget_gb=entry.budget_gb if entry.budget_adjustable else None,
                latency_critical=demand.latency_critical,
                # No saved override: the container keeps its budget (the files write none).
                keep_budget=not entry.budget_saved,
                labels=labels.get(entry.service, {}),
            )
        )
    return targets


def apply_status(*, live: bool = True, data: PlanningInput | None = None) -> dict:
    """The latest apply's progress plus each service's container state (``services_live``);
    ``data``: the planning input when the caller has read it already."""
    run = apply_run_latest()
    entries = progress.progress_get(str(run.operation_id)) if run else []
    in_progress = bool(run and not run.is_finished)
    return {
        "run": run,
        "in_progress": in_progress,
        "services_pending": [e["service"] for e in entries if e["status"] not in progress.TERMINAL],
        "services_completed": [e["service"] for e in entries if e["status"] in progress.TERMINAL],
        "service_statuses": [
            {
                "service": e["service"],
                "status": e["status"],
                "message": e.get("message", ""),
                "elapsed_s": e.get("elapsed_s"),
                # How the service moves, why, and how long it did not answer (moves.py).
                "move_mode": e.get("move_mode"),
                "move_reason": e.get("move_reason", ""),
                "downtime_s": e.get("downtime_s"),
            }
            for e in entries
        ],
        "services": services_live(
            restart={e["service"]: e["status"] for e in entries}, live=live, data=data
        ),
    }


def services_live(
    *, restart: dict[str, str] | None = None, live: bool = True, data: PlanningInput | None = None
) -> list[dict]:
    """Each enabled service's container status and health: asked of the engine now (``live``,
    which also refreshes the stored copy), else the copy the worker keeps (no engine call).
    The engine being unreachable is reported per service (status ``unknown``), not raised."""
    from assignments.live import live_cached, live_refresh, service_rows

    return service_rows(live_refresh() if live else live_cached(), restart=restart, data=data)
