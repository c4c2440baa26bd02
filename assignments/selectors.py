"""Reads: the catalog, the saved configuration, and the planner's view of both."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from assignments import planner
from assignments.models import AiService, ApplyRun, Assignment, ConfigVersion, GpuConfig
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


def planning_input() -> PlanningInput:
    services = list(service_list())
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
                default_budget_gb=svc.default_budget_gb,
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


def fallback_issues(assignments: dict[str, Assignment]) -> list[Issue]:
    return [
        Issue(
            code="fallback", message=a.fallback_reason, service=name, gpu_index=a.fallback_gpu_index
        )
        for name, a in assignments.items()
        if a.fallback_reason
    ]


def config_issues(data: PlanningInput | None = None) -> list[Issue]:
    """Warnings for the saved configuration: the planner's checks plus active fallbacks."""
    data = data or planning_input()
    issues = list(planner.check(data.gpus, data.services, data.current_placements()))
    return fallback_issues(data.assignments) + issues


def config_current() -> dict:
    """The saved configuration in the API's shape."""
    config = GpuConfig.load()
    data = planning_input()
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
        "warnings": [issue.message for issue in config_issues(data)],
        "updated_at": config.updated_at,
    }


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
