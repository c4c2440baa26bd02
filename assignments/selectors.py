"""Assignments room, reads: the catalog, the saved configuration, and the planner's view of both."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db.models import QuerySet

from assignments import planner
from assignments.files.entries import FileEntry
from assignments.files.project import base_budgets, base_inactive, compose_check, compose_lint
from assignments.files.reading import compose_files_setting
from assignments.models import (
    AiService,
    AiServicePart,
    Assignment,
    ConfigVersion,
    GpuConfig,
    ServiceRule,
)
from assignments.planner.checks import gb, gpu_label
from assignments.planner.needs import CATALOG, MEASURED, NEEDS, measured_need_mb
from assignments.planner.placing import need_mb
from assignments.planner.types import GpuView, Issue, Placement, ServiceDemand
from gpuconfig_site.errors import ApplicationError, echo
from gpuconfig_site.hosts import host_key
from gpuconfig_site.read_memo import cache_read_many
from gpuconfig_site.redis_health import REDIS_DOWN
from gpus.models import Gpu
from gpus.selectors import VramSummary, inventory_state_keys, service_vram_summaries
from gpus.units import MB_PER_GB

T = TypeVar("T")


class UnknownNeeds(ApplicationError):
    """``needs`` is neither ``measured`` nor ``catalog``."""

    code = "unknown_needs"


class UnknownStrategyError(ApplicationError, planner.UnknownStrategy):
    """The planner's ``UnknownStrategy`` (plain Python, it knows no ``ApplicationError``) as
    the refusal the API, the page and the CLI answer; still caught as the planner's."""

    code = "unknown_strategy"


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


PROFILE_FIX = "set COMPOSE_PROFILES or GPUCONFIG_COMPOSE_PROFILES"


@dataclass(frozen=True)
class InactiveService:
    """A catalog service under compose profiles none of which is active: not placed."""

    name: str
    profiles: tuple[str, ...]

    @property
    def note(self) -> str:
        """What the page says of it: under which profile, that it is not placed, the fix."""
        word = "profile" if len(self.profiles) == 1 else "profiles"
        return f"under {word} {', '.join(self.profiles)}, not active: not placed; {PROFILE_FIX}"


@dataclass(frozen=True)
class PlanningInput:
    """Everything the planner needs, read from the database in one go.

    ``needs`` is the figure the services' needs were taken from (``measured``: each service's
    measured p95 plus the margin where enough samples exist, else its catalog estimate;
    ``catalog``: the estimates only); ``measured`` the summaries behind it, by service.
    """

    gpus: tuple[GpuView, ...]
    services: tuple[ServiceDemand, ...]
    catalog: dict[str, AiService]
    assignments: dict[str, Assignment]
    needs: str = CATALOG
    measured: dict[str, VramSummary] = dataclasses.field(default_factory=dict)
    rules: tuple[planner.ServiceRule, ...] = ()
    # Enabled services the base compose file puts only under inactive profiles: known (their
    # rows are kept) but not in ``services``, so nothing places them or counts their VRAM.
    inactive: tuple[InactiveService, ...] = ()
    # The configuration state it was read under when it came from the cache
    # (``planning_input_cached``); empty when read from the database directly.
    read_state: tuple = dataclasses.field(default=(), compare=False)

    @property
    def measured_available(self) -> bool:
        """Whether any service has enough samples to plan with its measured use."""
        return any(
            summary.samples >= settings.GPUCONFIG_VRAM_MIN_SAMPLES
            for name, summary in self.measured.items()
            if name in self.catalog
        )

    def current_placements(self) -> list[Placement]:
        return [Placement(s.name, s.current_gpu, s.budget_gb) for s in self.services]


def compose_report(*, tool: str | None = None) -> dict:
    """What each managed service gets under the compose tool (``tool``: another kind than the
    one in use); raises ``UnknownTool`` for a name that is not a tool."""

    return compose_check(config_entries(), tool_name=tool)


def catalog_parts_total(*, service) -> int | None:
    """The VRAM (MB) a service hosting several models needs: the sum of its parts (None
    when it has none: its own estimate stands)."""
    from django.db.models import Sum

    return service.parts.aggregate(total=Sum("vram_mb"))["total"]


def catalog_parts() -> dict[str, list]:
    """Each service's hosted models, by service name (services without parts left out)."""

    parts: dict[str, list] = {}
    for part in AiServicePart.objects.select_related("service"):
        parts.setdefault(part.service.name, []).append(part)
    return parts


def lint_report() -> dict:
    """The lint of the user's stack with the files gpuconfig writes: findings with fixes."""

    return compose_lint(config_entries())


def needs_mode(value: str | None, *, empty_ok: bool = True) -> str | None:
    """``?needs=`` checked: None (the default), ``measured`` or ``catalog``; raises
    ``UnknownNeeds`` for anything else. ``empty_ok``: an empty value is the default (the page's
    form sends one); the API's schema allows only the two names, so it refuses it."""
    if value is None or (value == "" and empty_ok):
        return None
    if value not in NEEDS:
        raise UnknownNeeds(
            f"needs must be one of: {', '.join(NEEDS)} (got {echo(value)}).", field="needs"
        )
    return value


def _need(svc: AiService, summary: VramSummary | None, needs: str) -> tuple[int, str]:
    if needs != MEASURED or summary is None:
        return svc.vram_required_mb, CATALOG
    minimum = round(svc.min_budget_gb * MB_PER_GB) if svc.min_budget_gb else 0
    return measured_need_mb(
        catalog_mb=svc.vram_required_mb,
        minimum_mb=minimum,
        p95_mb=summary.p95_mb,
        samples=summary.samples,
        min_samples=settings.GPUCONFIG_VRAM_MIN_SAMPLES,
        margin=settings.GPUCONFIG_VRAM_MARGIN,
    )


def planning_input(*, needs: str | None = None) -> PlanningInput:
    """The planner's input from the database. ``needs``: ``measured`` (the default: measured
    use where enough of it was recorded, else the catalog) or ``catalog``."""

    needs = needs or MEASURED
    measured = service_vram_summaries()
    services = list(service_list())
    # A service's default budget is the base compose file's VRAM_BUDGET_GB when it sets one.
    base_budget = base_budgets()
    # Both read the base stack kept by file times (project.stack_current): no tool is run.
    off = base_inactive()
    inactive = tuple(InactiveService(s.name, off[s.name]) for s in services if s.name in off)
    assignments = assignment_map()
    demands = []
    for svc in services:
        if svc.name in off:
            continue
        a = assignments.get(svc.name)
        need, source = _need(svc, measured.get(svc.name), needs)
        demands.append(
            ServiceDemand(
                name=svc.name,
                need_mb=need,
                need_source=source,
                catalog_mb=svc.vram_required_mb,
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
        needs=needs,
        measured=measured,
        rules=planner_rules(),
        inactive=inactive,
    )


def need_note(demand: ServiceDemand, data: PlanningInput) -> str:
    """Which figure a service's need is: "measured: p95 6.2 GB + 10 %" or "catalog estimate"."""
    if demand.need_source == MEASURED:
        summary = data.measured[demand.name]
        margin = round(settings.GPUCONFIG_VRAM_MARGIN * 100)
        return f"measured: p95 {gb(summary.p95_mb)} GB + {margin} %"
    return "catalog estimate"


def issues_sourced(issues, data: PlanningInput) -> list[Issue]:
    """``issues`` with the figure behind each service's need named in its message, once any
    service is planned with its measured use (until then every need is the catalog's, as it
    always was, and messages are left as they are)."""
    if not any(d.need_source == MEASURED for d in data.services):
        return list(issues)
    by_name = {d.name: d for d in data.services}
    out = []
    for issue in issues:
        demand = by_name.get(issue.service) if issue.service else None
        if demand is not None:
            note = need_note(demand, data)
        else:
            measured = [d.name for d in data.services if d.need_source == MEASURED]
            note = f"needs measured for {', '.join(measured)}; catalog estimates for the rest"
        out.append(dataclasses.replace(issue, message=f"{issue.message} ({note})"))
    return out


def rule_list() -> QuerySet[ServiceRule]:
    """The user's rules, with their services, in catalog order."""
    return ServiceRule.objects.select_related("service").prefetch_related("never_with")


def planner_rules() -> tuple[planner.ServiceRule, ...]:
    """The rules as the planner takes them."""
    return tuple(
        planner.ServiceRule(
            service=rule.service.name,
            pin_gpu_uuid=rule.pin_gpu_uuid or None,
            exclusive=rule.exclusive,
            never_with=tuple(sorted(s.name for s in rule.never_with.all())),
            priority=rule.priority,
        )
        for rule in rule_list()
    )


def rule_entries() -> list[dict]:
    """The rules in the API's shape: one entry per service that has one."""
    return [
        {
            "service": r.service,
            "pin_gpu_uuid": r.pin_gpu_uuid,
            "exclusive": r.exclusive,
            "never_with": list(r.never_with),
            "priority": r.priority,
        }
        for r in planner_rules()
    ]


def rules_current() -> dict:
    """The rules with the saved configuration's warnings (rule conflicts and broken rules
    among them)."""
    current = config_current()
    return {
        "rules": rule_entries(),
        "warnings": current["warnings"],
        "warning_details": current["warning_details"],
    }


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
    placements = data.current_placements()
    issues = list(planner.rules_check(data.gpus, data.services, placements, data.rules))
    issues += issues_sourced(planner.check(data.gpus, data.services, placements), data)
    planned = {d.name for d in data.services}
    fallbacks = [i for i in fallback_issues(data.assignments) if i.service in planned]
    return fallbacks + issues + measured_issues(data)


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
                # Only rule issues name rules (and what would let them hold).
                **(
                    {"rules": list(issue.rules), "remedies": list(issue.remedies)}
                    if getattr(issue, "rules", ())
                    else {}
                ),
            }
        )
    return out


# Bumped by every write of a configuration row (``config_state_bump``, from the model signals
# this app connects): the saved configuration's read model is kept under it.
CONFIG_STATE_KEY = "assignments:config-state"
CONFIG_READ_TTL = 60  # at most, in case a bump was lost while Redis was away


def config_state_bump() -> None:
    """Make the cached configuration read model stale (any assignments row changed)."""

    try:
        try:
            cache.incr(host_key(CONFIG_STATE_KEY))
        except ValueError:  # not set yet (or evicted)
            cache.add(host_key(CONFIG_STATE_KEY), 1, None)
    except REDIS_DOWN:
        pass


def _base_files_state() -> tuple:
    """The base compose file(s) as set, with their times, and the active profiles: its budgets
    and which of its services are under inactive profiles are part of the plan."""

    files = compose_files_setting(getattr(settings, "GPUCONFIG_COMPOSE_FILE", None))
    state: list = [
        (
            getattr(settings, "GPUCONFIG_COMPOSE_PROFILES", "") or "",
            os.environ.get("COMPOSE_PROFILES", ""),
        )
    ]
    for path in (*files, *(files[:1] and (files[0].parent / ".env",))):
        try:
            state.append((str(path), path.stat().st_mtime_ns))
        except OSError:
            state.append((str(path), None))
    return tuple(state)


def config_state_read(name: str, build: Callable[[], T]) -> tuple[tuple, T]:
    """``build()``, a pure function of the configuration rows, the GPU inventory (rows, samples,
    last scan) and the base compose file, kept in the cache under the state it was built in:
    the configuration's state (bumped by every write of its rows), the inventory's version,
    the last scan's sequence number and the base files' times. One cache round trip reads the
    state and the kept value together; the value is used when its state is the current one.
    Returns the state (empty without Redis, when it is built on every call) and the value."""

    key, config = host_key(f"assignments:read:{name}"), host_key(CONFIG_STATE_KEY)
    version, last = inventory_state_keys()
    try:
        found = cache_read_many([config, version, last, key])
    except REDIS_DOWN:
        return (), build()
    state = (
        found.get(config, 0),
        found.get(version, 0),
        (found.get(last) or {}).get("seq", 0),
        _base_files_state(),
    )
    kept = found.get(key)
    if kept is not None and kept[0] == state:
        return state, kept[1]
    value = build()
    try:
        cache.set(key, (state, value), CONFIG_READ_TTL)
    except REDIS_DOWN:
        pass
    return state, value


def config_state_cached(name: str, build: Callable[[], T]) -> T:
    """``config_state_read``'s value alone."""
    return config_state_read(name, build)[1]


def config_read_cached(build: Callable[[], dict]) -> dict:
    """``build()`` (the saved configuration's answer: ``config_current`` as the API serializes
    it), kept in the cache while neither the configuration rows, the GPU inventory nor the
    base compose file changed (one cache round trip when nothing did). Without Redis it is
    built on every call."""
    return config_state_cached("config-answer", build)


def planning_input_cached(*, needs: str | None = None) -> PlanningInput:
    """``planning_input(needs=needs)`` for the read paths (the status and services API, the
    page), kept in the cache under the same state as ``config_read_cached``: a save, a catalog
    or rule edit, a scan or a changed base file is read at once. Writes validate against
    ``planning_input()`` itself."""
    mode = needs or MEASURED
    state, data = config_state_read(f"planning-input:{mode}", lambda: planning_input(needs=mode))
    return replace(data, read_state=state)


def measured_issues(data: PlanningInput) -> list[Issue]:
    """A warning per service whose measured peak went above its VRAM budget or, without a
    budget, above its catalog need: it risks running out of memory. The fix: raise the budget
    (suggested: the peak plus the margin) or move the service."""
    assignments = data.assignments
    out = []
    for d in data.services:
        summary = data.measured.get(d.name)
        if summary is None or not summary.peak_mb:
            continue
        budget = d.budget_gb if d.budget_gb is not None else d.default_budget_gb
        if d.budget_adjustable and budget is not None:
            limit_mb, what = round(budget * MB_PER_GB), "budget"
        else:
            limit_mb, what = d.catalog_mb or d.need_mb, "catalog need"
        if summary.peak_mb <= limit_mb:
            continue
        window_h = round(summary.window_s / 3600)
        suggested = None
        fix = "move it to a GPU with more free VRAM"
        if d.budget_adjustable:
            wanted = summary.peak_mb * (1 + settings.GPUCONFIG_VRAM_MARGIN) / MB_PER_GB
            suggested = math.ceil(wanted * 10) / 10
            fix = f"raise its budget to {suggested:g} GB, or {fix}"
        a = assignments.get(d.name)
        out.append(
            Issue(
                code="measured_above_need",
                message=(
                    f"{d.name} peaked at {gb(summary.peak_mb)} GB ({window_h} h), above its "
                    f"{gb(limit_mb)} GB {what}: risk of out-of-memory. Fix: {fix}."
                ),
                service=d.name,
                gpu_index=a.effective_gpu_index if a else None,
                suggested_budget_gb=suggested,
                needed_mb=summary.peak_mb,
                available_mb=limit_mb,
            )
        )
    return out


def config_current(*, needs: str | None = None) -> dict:
    """The saved configuration in the API's shape (``needs``: see ``planning_input``)."""
    config = GpuConfig.load()
    data = planning_input(needs=needs)
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


def strategy_plan(strategy: str, data: PlanningInput) -> planner.Plan:
    """``strategy``'s plan for ``data`` (raises UnknownStrategyError). An automatic strategy plans
    from the catalog: saved budget overrides are the manual layout's, so "Revert to VRAM-Based"
    gives the recommended configuration whatever was saved before."""
    services = data.services
    if strategy != "manual":
        services = tuple(replace(d, budget_gb=None) for d in services)
    try:
        return planner.plan(strategy, data.gpus, services, data.rules)
    except planner.UnknownStrategy as exc:
        raise UnknownStrategyError(str(exc), field="strategy") from None


def config_preview(
    *, strategy: str, needs: str | None = None
) -> tuple[planner.Plan, PlanningInput]:
    """What ``strategy`` would do with the current inventory (raises UnknownStrategyError), its
    warnings naming the figure each need was taken from (``needs``: see ``planning_input``)."""
    data = planning_input(needs=needs)
    plan = strategy_plan(strategy, data)
    return dataclasses.replace(plan, issues=tuple(issues_sourced(plan.issues, data))), data


def version_list(*, limit: int = 10) -> QuerySet[ConfigVersion]:
    return ConfigVersion.objects.select_related("created_by")[:limit]


def config_entries(data: PlanningInput | None = None) -> list[FileEntry]:
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
            FileEntry(
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
