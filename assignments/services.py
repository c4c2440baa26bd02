"""Writes: saving the configuration, following the GPU inventory, applying it to containers."""

from __future__ import annotations

import logging
import math
import threading
import uuid as uuidlib
from dataclasses import dataclass, field, replace

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from assignments import files, planner, progress
from assignments.models import AiService, ApplyRun, Assignment, ConfigVersion, GpuConfig
from assignments.planner.types import MB_PER_GB, Placement
from assignments.selectors import PlanningInput, config_issues, planning_input
from gpus.models import Gpu

logger = logging.getLogger(__name__)

MAX_BUDGET_GB = 1024.0
APPLY_LOCK_KEY = "apply:lock"
APPLY_QUEUE_TTL = 300  # seconds a queued apply holds the lock waiting for a worker


class ConfigInvalid(Exception):
    """A save was refused; ``detail`` says why, in words for the user."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class ApplyBusy(Exception):
    """Another apply holds the lock."""


@dataclass
class SaveResult:
    version: ConfigVersion
    warnings: list[str] = field(default_factory=list)


# --- validation ------------------------------------------------------------------------------


def _validate_budget(name: str, value, *, svc: AiService, gpu: Gpu | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigInvalid(f"{name}: vram_budget_override must be a number of GB, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigInvalid(
            f"{name}: vram_budget_override must be greater than 0 GB, got {value:g}."
        )
    if not svc.budget_adjustable:
        raise ConfigInvalid(f"{name}: this service does not take a VRAM budget override.")
    limit = MAX_BUDGET_GB
    where = f"the {MAX_BUDGET_GB:g} GB limit"
    if gpu is not None and gpu.vram_total_mb:
        limit = gpu.vram_total_mb / MB_PER_GB
        where = f"the {limit:.1f} GB of GPU {gpu.index} ({gpu.name})"
    if value > limit:
        raise ConfigInvalid(f"{name}: a VRAM budget of {value:g} GB is more than {where}.")
    return round(value, 2)


def _validate(strategy, assignments, data: PlanningInput) -> tuple[str | None, dict[str, dict]]:
    """Check a save request completely before anything is written; returns cleaned values."""
    if strategy is not None and (
        not isinstance(strategy, str) or strategy not in planner.strategy_names()
    ):
        raise ConfigInvalid(
            f"Unknown strategy {strategy!r}; expected one of: {', '.join(planner.strategy_names())}."
        )
    if assignments is None:
        return strategy, {}
    if not isinstance(assignments, list):
        raise ConfigInvalid(
            "assignments must be a list of {service, gpu_index, vram_budget_override}."
        )
    gpus = {g.index: g for g in Gpu.objects.filter(available=True)}
    cleaned: dict[str, dict] = {}
    for position, item in enumerate(assignments):
        if not isinstance(item, dict):
            raise ConfigInvalid(f"assignments[{position}] must be an object.")
        unknown_keys = set(item) - {"service", "gpu_index", "vram_budget_override"}
        if unknown_keys:
            raise ConfigInvalid(
                f"assignments[{position}]: unknown field(s) {', '.join(sorted(unknown_keys))}."
            )
        name = item.get("service")
        if not isinstance(name, str) or not name:
            raise ConfigInvalid(f"assignments[{position}]: service is required.")
        svc = data.catalog.get(name)
        if svc is None:
            raise ConfigInvalid(f"Unknown service {name!r}; known: {', '.join(data.catalog)}.")
        if name in cleaned:
            raise ConfigInvalid(f"Service {name!r} is listed twice.")
        if "gpu_index" not in item:
            raise ConfigInvalid(f"{name}: gpu_index is required (null to leave it unassigned).")
        index = item["gpu_index"]
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise ConfigInvalid(f"{name}: gpu_index must be an integer or null, got {index!r}.")
        if index is not None and index not in gpus:
            present = ", ".join(str(i) for i in sorted(gpus)) or "none"
            raise ConfigInvalid(f"{name}: there is no available GPU {index} (present: {present}).")
        budget = _validate_budget(
            name,
            item.get("vram_budget_override"),
            svc=svc,
            gpu=gpus.get(index) if index is not None else None,
        )
        cleaned[name] = {
            "gpu": gpus.get(index) if index is not None else None,
            "budget": budget,
            "budget_given": "vram_budget_override" in item,
        }
    return strategy, cleaned


def config_validate(*, strategy=None, assignments=None) -> None:
    """Check a change the way a save would, without saving; raises ConfigInvalid."""
    _validate(strategy, assignments, planning_input())


# --- saving ----------------------------------------------------------------------------------


def _snapshot(data: PlanningInput) -> list[dict]:
    return [
        {
            "service": d.name,
            "gpu_index": d.current_gpu,
            "gpu_uuid": data.assignments[d.name].effective_gpu_uuid
            if d.name in data.assignments
            else "",
            "vram_budget_override": d.budget_gb,
        }
        for d in data.services
    ]


def _record_version(
    *, source: str, strategy: str, user=None, actor: str = ""
) -> tuple[ConfigVersion, list[str]]:
    data = planning_input()
    warnings = [issue.message for issue in config_issues(data)]
    version = ConfigVersion.objects.create(
        source=source,
        strategy=strategy,
        created_by=user if getattr(user, "pk", None) else None,
        actor=actor or (getattr(user, "username", "") or ""),
        assignments=_snapshot(data),
        warnings=warnings,
    )
    transaction.on_commit(config_files_write)
    return version, warnings


def config_save(*, strategy=None, assignments=None, user=None, actor: str = "") -> SaveResult:
    """Validate, then save assignments and a ConfigVersion in one transaction; after commit,
    write both generated files. A refused request (``ConfigInvalid``) changes nothing.

    With ``assignments`` the given services are set as given (others keep theirs). With only an
    automatic ``strategy``, its plan becomes the saved assignment (budgets are kept).
    """
    data = planning_input()
    strategy, cleaned = _validate(strategy, assignments, data)
    config = GpuConfig.load()
    new_strategy = strategy or config.strategy

    if not cleaned and strategy is not None and strategy != "manual":
        plan = planner.plan(strategy, data.gpus, data.services)
        gpus = {g.index: g for g in Gpu.objects.filter(available=True)}
        cleaned = {
            p.service: {
                "gpu": gpus.get(p.gpu_index) if p.gpu_index is not None else None,
                "budget": None,
                "budget_given": False,
            }
            for p in plan.placements
        }

    with transaction.atomic():
        config = GpuConfig.objects.select_for_update().get(pk=config.pk)
        config.strategy = new_strategy
        config.updated_by = user if getattr(user, "pk", None) else None
        config.save()
        for name, values in cleaned.items():
            assignment, _ = Assignment.objects.get_or_create(service=data.catalog[name])
            gpu = values["gpu"]
            if values["budget_given"]:
                assignment.vram_budget_override = values["budget"]
            if (
                assignment.fallback_reason
                and gpu is not None
                and gpu.uuid == assignment.fallback_gpu_uuid
            ):
                # The row names where the service runs while its GPU is away (a page that saves
                # every row does that): keep the saved choice, so it comes back with the card.
                assignment.save()
                continue
            assignment.gpu_index = gpu.index if gpu else None
            assignment.gpu_uuid = gpu.uuid if gpu else ""
            # The user chose another GPU: the fallback no longer applies.
            assignment.fallback_gpu_index = None
            assignment.fallback_gpu_uuid = ""
            assignment.fallback_reason = ""
            assignment.save()
        version, warnings = _record_version(
            source=ConfigVersion.Source.SAVE, strategy=new_strategy, user=user, actor=actor
        )
    return SaveResult(version=version, warnings=warnings)


def config_entries(data: PlanningInput | None = None) -> list[files.FileEntry]:
    data = data or planning_input()
    gpus = {g.uuid: g for g in Gpu.objects.all()}
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
                fallback_reason=a.fallback_reason if a else "",
            )
        )
    return entries


def config_files_write() -> dict:
    """(Re)write both generated files from the saved configuration."""
    data = planning_input()
    return files.write_config_files(
        config_entries(data),
        strategy=GpuConfig.load().strategy,
        warnings=[i.message for i in config_issues(data)],
        generated_at=timezone.now(),
    )


# --- following the inventory -----------------------------------------------------------------


def _assignments_initial() -> dict:
    """The first time GPUs are seen, the configured strategy's plan becomes the saved one.

    VRAM in use at that point is taken to be the services' own (they usually run already), so
    the plan sees the whole of each card.
    """
    data = planning_input()
    gpus = [replace(g, foreign_used_mb=0) for g in data.gpus]
    strategy = GpuConfig.load().strategy
    if strategy == "manual":
        strategy = "vram_based"
    plan = planner.plan(strategy, gpus, data.services)
    by_index = {g.index: g for g in Gpu.objects.filter(available=True)}
    for p in plan.placements:
        gpu = by_index.get(p.gpu_index) if p.gpu_index is not None else None
        Assignment.objects.create(
            service=data.catalog[p.service],
            gpu_index=gpu.index if gpu else None,
            gpu_uuid=gpu.uuid if gpu else "",
        )
    _record_version(
        source=ConfigVersion.Source.INITIAL, strategy=GpuConfig.load().strategy, actor="gpuconfig"
    )
    logger.info("Initial GPU assignments saved from the %s plan", strategy)
    return {"initial": [p.service for p in plan.placements]}


def _gpu_label(gpu: Gpu | None, index: int | None) -> str:
    if gpu is None:
        return f"GPU {index}" if index is not None else "no GPU"
    return f"GPU {gpu.index} ({gpu.name})"


@transaction.atomic
def assignments_follow_inventory() -> dict:
    """Keep the saved assignments true to the hardware after a scan.

    - a card whose index changed: the assignment follows its UUID, with the new index;
    - a saved GPU that is lost: the service falls back to the available GPU with the most free
      VRAM (WARNING logged, shown as a warning), or is reported unplaced when none is left;
    - the saved GPU is back: the fallback is cleared and the saved choice applies again.
    The generated files are rewritten after commit when anything changed.
    """
    gpus_by_uuid = {g.uuid: g for g in Gpu.objects.all()}
    available_by_index = {g.index: g for g in gpus_by_uuid.values() if g.available}
    if available_by_index and not Assignment.objects.exists():
        return _assignments_initial()
    changes: dict[str, list[str]] = {
        "reindexed": [],
        "fallback": [],
        "restored": [],
        "unplaced": [],
    }
    rows = list(
        Assignment.objects.select_related("service")
        .select_for_update()
        .filter(service__enabled=True)
    )

    for a in rows:
        saved = gpus_by_uuid.get(a.gpu_uuid) if a.gpu_uuid else None
        if saved is None and a.gpu_index is not None and not a.gpu_uuid:
            saved = available_by_index.get(a.gpu_index)
            if saved:
                a.gpu_uuid = saved.uuid
                a.save(update_fields=["gpu_uuid", "updated_at"])
        if saved and saved.available:
            dirty = []
            if a.gpu_index != saved.index:
                a.gpu_index = saved.index
                dirty.append("gpu_index")
                changes["reindexed"].append(a.service.name)
            if a.fallback_reason:
                logger.info(
                    "%s: %s is back; restoring the saved assignment",
                    a.service.name,
                    _gpu_label(saved, None),
                )
                a.fallback_gpu_index, a.fallback_gpu_uuid, a.fallback_reason = None, "", ""
                dirty += ["fallback_gpu_index", "fallback_gpu_uuid", "fallback_reason"]
                changes["restored"].append(a.service.name)
            if dirty:
                a.save(update_fields=[*dirty, "updated_at"])

    # Fallbacks are placed one by one so each sees the VRAM the previous ones took.
    for a in rows:
        saved = gpus_by_uuid.get(a.gpu_uuid) if a.gpu_uuid else None
        if a.gpu_index is None and not a.gpu_uuid:
            continue  # never assigned: nothing to fall back from
        if saved is not None and saved.available:
            continue
        current_fallback = gpus_by_uuid.get(a.fallback_gpu_uuid) if a.fallback_gpu_uuid else None
        if a.fallback_reason and current_fallback is not None and current_fallback.available:
            if a.fallback_gpu_index != current_fallback.index:
                a.fallback_gpu_index = current_fallback.index
                a.save(update_fields=["fallback_gpu_index", "updated_at"])
            continue
        data = planning_input()
        others = [
            Placement(d.name, d.current_gpu, d.budget_gb)
            for d in data.services
            if d.name != a.service.name
        ]
        target_index = planner.fallback_gpu(data.gpus, data.services, others)
        target = available_by_index.get(target_index) if target_index is not None else None
        lost_label = _gpu_label(saved, a.gpu_index)
        if target is None:
            reason = f"{a.service.name}: {lost_label} is unavailable and no GPU is left; the service is not placed."
            logger.warning(reason)
            changes["unplaced"].append(a.service.name)
        else:
            reason = (
                f"{a.service.name}: {lost_label} is unavailable; falling back to {_gpu_label(target, None)} "
                "until it returns."
            )
            logger.warning(reason)
            changes["fallback"].append(a.service.name)
        if (a.fallback_reason, a.fallback_gpu_uuid) != (reason, target.uuid if target else ""):
            a.fallback_gpu_index = target.index if target else None
            a.fallback_gpu_uuid = target.uuid if target else ""
            a.fallback_reason = reason
            a.save(
                update_fields=[
                    "fallback_gpu_index",
                    "fallback_gpu_uuid",
                    "fallback_reason",
                    "updated_at",
                ]
            )
        else:
            # Already falling back there: not a change.
            changes["fallback" if target else "unplaced"].remove(a.service.name)

    if any(changes.values()):
        source = (
            ConfigVersion.Source.FALLBACK
            if changes["fallback"] or changes["unplaced"]
            else ConfigVersion.Source.RESTORE
            if changes["restored"]
            else ConfigVersion.Source.REINDEX
        )
        _record_version(source=source, strategy=GpuConfig.load().strategy, actor="gpuconfig")
    return {k: v for k, v in changes.items() if v}


# --- applying --------------------------------------------------------------------------------


def apply_targets(data: PlanningInput | None = None):
    """What each enabled service should run with: device ids (in the configured format) and
    its VRAM budget."""
    from assignments.applying import Target

    data = data or planning_input()
    id_format = settings.GPUCONFIG_DEVICE_ID_FORMAT
    targets = []
    for entry, demand in zip(config_entries(data), data.services, strict=True):
        device_ids = () if entry.gpu_index is None else (files.device_id(entry, id_format),)
        targets.append(
            Target(
                service=entry.service,
                device_ids=device_ids,
                budget_gb=entry.budget_gb if entry.budget_adjustable else None,
                latency_critical=demand.latency_critical,
            )
        )
    return targets


def _lock_holder() -> str | None:
    return cache.get(APPLY_LOCK_KEY)


def apply_recover_stale(*, runtime=None) -> list[str]:
    """After a worker died mid-apply: once its lock has expired, restore any container left
    renamed aside and mark the interrupted runs failed. Safe to call at any time."""
    if _lock_holder() is not None:
        return []
    stale = list(ApplyRun.objects.filter(status__in=[ApplyRun.Status.RUNNING]))
    restored: list[str] = []
    if stale:
        from assignments.runtime import get_runtime
        from assignments.runtime.base import RuntimeUnavailable

        try:
            restored = (runtime or get_runtime()).recover()
        except RuntimeUnavailable as exc:
            logger.error("Cannot recover interrupted apply: %s", exc)
            return []
    for run in stale:
        reason = "The worker stopped during this apply"
        if restored:
            reason += f"; restored the previous container of: {', '.join(restored)}"
        with transaction.atomic():
            run = ApplyRun.objects.select_for_update().get(pk=run.pk)
            if run.status != ApplyRun.Status.RUNNING:
                continue
            run.status = ApplyRun.Status.FAILED
            run.error = reason + "."
            run.finished_at = timezone.now()
            run.save(update_fields=["status", "error", "finished_at"])
        for service in run.services:
            entry = next(
                (
                    p
                    for p in progress.progress_get(str(run.operation_id))
                    if p["service"] == service
                ),
                None,
            )
            if entry and entry["status"] not in progress.TERMINAL:
                progress.progress_update(str(run.operation_id), service, "failed", reason)
        logger.warning("Apply %s marked failed: %s", run.operation_id, reason)
    return restored


def apply_start(*, user=None, actor: str = "") -> tuple[ApplyRun, list[str]]:
    """Take the apply lock, work out which services will restart, create the ApplyRun and
    enqueue the work after commit. Raises ApplyBusy while another apply runs and
    RuntimeUnavailable when the container engine cannot be reached."""
    from assignments.applying import diff
    from assignments.runtime import get_runtime
    from assignments.runtime.base import RuntimeError_, RuntimeUnavailable
    from assignments.tasks import apply_config_task

    operation_id = uuidlib.uuid4()
    if not cache.add(APPLY_LOCK_KEY, str(operation_id), timeout=APPLY_QUEUE_TTL):
        raise ApplyBusy(f"An apply is already running (operation {_lock_holder()}).")
    try:
        apply_recover_stale()
        runtime = get_runtime()
        changes = diff(runtime, apply_targets())
        pending = [c.service for c in changes if c.needs_recreate]
    except (RuntimeUnavailable, RuntimeError_) as exc:
        cache.delete(APPLY_LOCK_KEY)
        ApplyRun.objects.create(
            operation_id=operation_id,
            status=ApplyRun.Status.FAILED,
            requested_by=user if getattr(user, "pk", None) else None,
            actor=actor,
            error=str(exc),
            finished_at=timezone.now(),
        )
        raise
    except BaseException:
        cache.delete(APPLY_LOCK_KEY)
        raise
    with transaction.atomic():
        run = ApplyRun.objects.create(
            operation_id=operation_id,
            requested_by=user if getattr(user, "pk", None) else None,
            actor=actor or (getattr(user, "username", "") or ""),
            config_version=ConfigVersion.objects.order_by("-created_at", "-pk").first(),
            services=pending,
        )
        progress.progress_init(str(operation_id), pending)
        apply_config_task.delay_on_commit(run.pk)
    return run, pending


class _LockKeeper:
    """Refreshes the apply lock while the apply runs; it expires soon after a crash."""

    def __init__(self, token: str):
        self.token = token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apply-lock", daemon=True)

    def __enter__(self):
        self.ttl = settings.GPUCONFIG_APPLY_LOCK_TTL
        cache.set(APPLY_LOCK_KEY, self.token, self.ttl)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.ttl / 3):
            cache.set(APPLY_LOCK_KEY, self.token, self.ttl)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        if cache.get(APPLY_LOCK_KEY) == self.token:
            cache.delete(APPLY_LOCK_KEY)


def config_apply(*, run_id: int) -> ApplyRun:
    """Carry out one ApplyRun: regenerate the override file, recreate the changed containers
    (health-gated, rolled back on failure) with live progress, and record the outcome.

    Safe to run twice: a run that is no longer queued returns at once.
    """
    from assignments.applying import diff, execute
    from assignments.runtime import get_runtime
    from assignments.runtime.base import Outcome, RuntimeUnavailable

    with transaction.atomic():
        run = ApplyRun.objects.select_for_update().get(pk=run_id)
        if run.status != ApplyRun.Status.QUEUED:
            return run
        holder = _lock_holder()
        if holder not in (None, str(run.operation_id)):
            run.status = ApplyRun.Status.FAILED
            run.error = f"Another apply ({holder}) was running."
            run.finished_at = timezone.now()
            run.save()
            return run
        run.status = ApplyRun.Status.RUNNING
        run.started_at = timezone.now()
        run.save(update_fields=["status", "started_at"])

    op = str(run.operation_id)
    log: list[str] = []
    results: dict[str, dict] = {}

    def report(service: str, step, message: str = "") -> None:
        progress.progress_update(op, service, str(step), message)
        log.append(f"{timezone.now():%H:%M:%S} {service}: {step} {message}".rstrip())

    with _LockKeeper(op):
        try:
            config_files_write()
            runtime = get_runtime()
            restored = runtime.recover()
            if restored:
                log.append(
                    f"Restored containers left aside by an earlier apply: {', '.join(restored)}"
                )
            changes = [c for c in diff(runtime, apply_targets()) if c.needs_recreate]
            for gone in sorted(set(run.services) - {c.service for c in changes}):
                report(gone, "unchanged", "Already running with this assignment")
            outcome = execute(
                runtime, changes, progress=report, health_timeout=settings.GPUCONFIG_HEALTH_TIMEOUT
            )
            for service, result in outcome.items():
                results[service] = {"outcome": str(result.outcome), "message": result.message}
            failed = [s for s, r in outcome.items() if r.outcome != Outcome.HEALTHY]
            status = ApplyRun.Status.SUCCEEDED
            error = ""
            if failed:
                status = (
                    ApplyRun.Status.PARTIAL
                    if len(failed) < len(outcome)
                    else ApplyRun.Status.FAILED
                )
                error = "; ".join(
                    f"{s}: {outcome[s].outcome} — {outcome[s].message}" for s in failed
                )
        except RuntimeUnavailable as exc:
            status, error = ApplyRun.Status.FAILED, str(exc)
            for service in run.services:
                report(service, "failed", str(exc))
        except Exception as exc:  # recorded on the run; the worker must not lose the outcome
            logger.exception("Apply %s failed", op)
            status, error = ApplyRun.Status.FAILED, f"{type(exc).__name__}: {exc}"
        ApplyRun.objects.filter(pk=run.pk).update(
            status=status,
            error=error,
            results=results,
            log="\n".join(log),
            finished_at=timezone.now(),
        )
    run.refresh_from_db()
    return run


def apply_status() -> dict:
    """The latest apply's progress plus each service's live container state."""
    from assignments.selectors import apply_run_latest

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
            }
            for e in entries
        ],
        "services": services_live(restart={e["service"]: e["status"] for e in entries}),
    }


def services_live(*, restart: dict[str, str] | None = None) -> list[dict]:
    """Each enabled service's live container status and health, from the engine.

    The engine being unreachable is reported per service (status ``unknown``), not raised.
    """
    from assignments.runtime import get_runtime
    from assignments.runtime.base import RuntimeError_, RuntimeUnavailable

    data = planning_input()
    restart = restart or {}
    out = []
    try:
        runtime = get_runtime()
        states = {d.name: runtime.inspect(d.name) for d in data.services}
        error = ""
    except (RuntimeUnavailable, RuntimeError_) as exc:
        states, error = {}, str(exc)
    for d in data.services:
        state = states.get(d.name)
        out.append(
            {
                "name": d.name,
                "status": (state.status if state else ("unknown" if error else "missing")),
                "health": state.health if state else None,
                "gpu_index": d.current_gpu,
                "restart_status": restart.get(d.name),
                **({"error": error} if error else {}),
            }
        )
    return out
