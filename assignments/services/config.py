"""Assignments room. Writes of the saved configuration: validating a change, saving it with a
version, and (re)writing the generated files."""

from __future__ import annotations

import fcntl
import logging
import math
import os
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import transaction
from django.utils import timezone

from assignments import planner
from assignments.files import generated, staging
from assignments.models import AiService, Assignment, ConfigVersion, GpuConfig
from assignments.planner.checks import gpu_label
from assignments.planner.registry import get_strategy
from assignments.planner.types import same_budget
from assignments.selectors import (
    PlanningInput,
    config_entries,
    config_issues,
    config_preview,
    planning_input,
    strategy_plan,
)
from gpuconfig_site.errors import ApplicationError, echo
from gpuconfig_site.hosts import host_config_dir, host_name, host_scope
from gpus.models import Gpu

logger = logging.getLogger(__name__)

MAX_BUDGET_GB = 1024.0
MIN_BUDGET_GB = 0.01  # budgets are kept to two decimals
STALE_TEMP_S = 600  # a temp file this old belongs to no save in progress
ASSIGNMENT_KEYS = ("service", "gpu_index", "vram_budget_override")


class ConfigInvalid(ApplicationError):
    """A save was refused; ``message`` says why in words, ``extra`` where (service, field)."""

    code = "config_invalid"


class FilesUnwritable(ApplicationError):
    """The generated files cannot be written, so the change was not saved either."""

    code = "files_unwritable"


@dataclass
class SaveResult:
    """``version`` is the new ConfigVersion, or the latest one when nothing changed."""

    version: ConfigVersion | None
    warnings: list[str] = field(default_factory=list)
    changed: bool = True
    # What the save did beyond the request, in words (a lowered budget that went with a move).
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Cleaned:
    """One service's validated change."""

    gpu: Gpu | None
    budget: float | None
    budget_given: bool
    # The plan lowered ``budget`` to fit ``gpu``: the budget belongs to that placement.
    lowered: bool = False


def actor_name(user) -> str:
    """Who made a change, as text: the signed-in user's name (``api-key`` for the key), else ''."""
    return user.get_username() if getattr(user, "is_authenticated", False) else ""


# --- validation ------------------------------------------------------------------------------


def _validate_budget(name: str, value, *, svc: AiService, gpu: Gpu | None) -> float | None:
    if value is None:
        return None

    def refuse(message: str) -> ConfigInvalid:
        return ConfigInvalid(f"{name}: {message}", service=name, field="vram_budget_override")

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise refuse(f"vram_budget_override must be a number of GB, got {echo(value)}.")
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float: far above any limit
        raise refuse(
            f"a VRAM budget of {echo(value)} GB is more than the {MAX_BUDGET_GB:g} GB limit."
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise refuse(f"vram_budget_override must be greater than 0 GB, got {value:g}.")
    if not svc.budget_adjustable:
        raise refuse("this service does not take a VRAM budget override.")
    # More than the card holds is the guide's "VRAM Budget Exceeded" warning (with a suggested
    # budget), which the user may accept: saved, not refused. Only nonsense is refused.
    if value > MAX_BUDGET_GB:
        raise refuse(f"a VRAM budget of {value:g} GB is more than the {MAX_BUDGET_GB:g} GB limit.")
    if round(value, 2) < MIN_BUDGET_GB:
        raise refuse(f"a VRAM budget must be at least {MIN_BUDGET_GB:g} GB, got {value:g}.")
    return round(value, 2)


def _validate_strategy(strategy) -> None:
    if strategy is None:
        return
    try:
        get_strategy(strategy)
    except planner.UnknownStrategy as exc:
        raise ConfigInvalid(str(exc), code="unknown_strategy", field="strategy") from None


def _validate_gpu_index(name: str, item: dict, gpus: dict[int, Gpu]) -> Gpu | None:
    if "gpu_index" not in item:
        raise ConfigInvalid(
            f"{name}: gpu_index is required (null to leave it unassigned).",
            service=name,
            field="gpu_index",
        )
    index = item["gpu_index"]
    if index is None:
        return None
    if isinstance(index, bool) or not isinstance(index, int):
        raise ConfigInvalid(
            f"{name}: gpu_index must be an integer or null, got {echo(index)}.",
            service=name,
            field="gpu_index",
        )
    if index not in gpus:
        present = ", ".join(str(i) for i in sorted(gpus)) or "none"
        raise ConfigInvalid(
            f"{name}: there is no available GPU {index} (present: {present}).",
            code="gpu_unavailable",
            service=name,
            field="gpu_index",
        )
    return gpus[index]


def _validate_item(position: int, item, data: PlanningInput, gpus: dict[int, Gpu]):
    """One entry of ``assignments``: its service name and cleaned values."""
    if not isinstance(item, dict):
        raise ConfigInvalid(f"assignments[{position}] must be an object.", field="assignments")
    unknown_keys = set(item) - set(ASSIGNMENT_KEYS)
    if unknown_keys:
        raise ConfigInvalid(
            f"assignments[{position}]: unknown field(s) {echo(', '.join(sorted(unknown_keys)))}.",
            field="assignments",
        )
    name = item.get("service")
    if not isinstance(name, str) or not name:
        raise ConfigInvalid(f"assignments[{position}]: service is required.", field="service")
    svc = data.catalog.get(name)
    if svc is None:
        raise ConfigInvalid(
            f"Unknown service {echo(name)}; known: {', '.join(data.catalog)}.",
            code="unknown_service",
            field="service",
        )
    gpu = _validate_gpu_index(name, item, gpus)
    budget = _validate_budget(name, item.get("vram_budget_override"), svc=svc, gpu=gpu)
    # A PUT replaces: an omitted budget means none (the service's own default), never "keep".
    return name, _Cleaned(gpu, budget, True)


def _validate(strategy, assignments, data: PlanningInput) -> dict[str, _Cleaned]:
    """Check a save request completely before anything is written; returns cleaned values."""
    _validate_strategy(strategy)
    if assignments is None:
        return {}
    if not isinstance(assignments, list):
        raise ConfigInvalid(
            "assignments must be a list of {service, gpu_index, vram_budget_override}.",
            field="assignments",
        )
    gpus = {g.index: g for g in Gpu.objects.filter(available=True)}
    cleaned: dict[str, _Cleaned] = {}
    for position, item in enumerate(assignments):
        name, values = _validate_item(position, item, data, gpus)
        if name in cleaned:
            raise ConfigInvalid(f"Service {name!r} is listed twice.", service=name, field="service")
        cleaned[name] = values
    return cleaned


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


def config_version_record(
    *, source: str, strategy: str, user=None, actor: str = "", files_required: bool = False
) -> tuple[ConfigVersion, list[str]]:
    """Snapshot the saved configuration as a ConfigVersion, inside the caller's transaction,
    and stage the generated files for it: written to temp files now, moved into place once the
    transaction commits. Returns the version and its warnings.

    With ``files_required`` a folder that cannot be written raises FilesUnwritable, so the
    caller's transaction (and the change) is rolled back; otherwise it is logged and
    ``config_files_sync`` writes the files later.
    """
    data = planning_input()
    warnings = [issue.message for issue in config_issues(data)]
    version = ConfigVersion.objects.create(
        source=source,
        strategy=strategy,
        created_by=user if getattr(user, "pk", None) else None,
        actor=actor or actor_name(user),
        assignments=_snapshot(data),
        warnings=warnings,
    )
    try:
        staged = staging.stage_files(_files_render(data, strategy=strategy, version=version))
    except OSError as exc:
        error = _unwritable(exc)
        if files_required:
            raise error from exc
        logger.error("%s The next sync writes them.", error.message)
        return version, warnings
    host = host_name()  # the commit may come after the caller's host scope has ended
    transaction.on_commit(lambda: _staged_commit(staged, version, host=host))
    return version, warnings


def _unwritable(exc: OSError) -> FilesUnwritable:
    folder = host_config_dir()
    return FilesUnwritable(
        f"Cannot write the generated files in {folder} ({exc.strerror or exc}); nothing was "
        "saved. Make the folder writable (GPUCONFIG_CONFIG_DIR) and save again.",
        field="config_dir",
    )


def _files_render(data: PlanningInput, *, strategy: str, version: ConfigVersion | None):
    """Both files' text for the saved configuration; ``generated_at`` is the version's time,
    so the same configuration always renders the same text."""
    return generated.render_config_files(
        config_entries(data),
        strategy=strategy,
        warnings=[i.message for i in config_issues(data)],
        generated_at=version.created_at if version else timezone.now(),
    )


@contextmanager
def _files_lock():
    """One writer of the generated files at a time, across processes (a lock on the folder)."""
    folder = host_config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _latest_version() -> ConfigVersion | None:
    return ConfigVersion.objects.order_by("-created_at", "-pk").first()


def _staged_commit(staged: staging.StagedFiles, version: ConfigVersion, *, host: str) -> None:
    """After commit: move the staged files into place, unless a newer version of ``host`` was
    saved meanwhile (its own files are the right ones). A failure here leaves the database ahead
    of the files; ``config_files_sync`` (worker start, then periodically) writes them again."""
    try:
        with host_scope(host), _files_lock():
            latest = _latest_version()
            if latest is not None and latest.pk != version.pk:
                staged.discard()
                return
            staged.commit()
    except OSError:
        staged.discard()
        logger.exception("Could not move the generated files into place for version %s", version.pk)


def _planned_changes(strategy: str, data: PlanningInput) -> dict[str, _Cleaned]:
    """An automatic strategy's plan as the changes to save: its GPUs, and the budgets it lowered
    to make a GPU fit. It plans from the catalog (``strategy_plan``), so any other saved
    override goes: the saved configuration is the plan shown."""
    plan = strategy_plan(strategy, data)
    gpus = {g.index: g for g in Gpu.objects.filter(available=True)}
    own = tuple(replace(d, budget_gb=None) for d in data.services)
    lowered = planner.budgets_lowered(plan, own)
    return {
        p.service: _Cleaned(
            gpus.get(p.gpu_index) if p.gpu_index is not None else None,
            lowered.get(p.service),
            True,
            lowered=p.service in lowered,
        )
        for p in plan.placements
    }


def _assignment_set(assignment: Assignment, values: _Cleaned) -> None:
    gpu = values.gpu
    if values.budget_given:
        if values.lowered:
            assignment.budget_lowered_for_uuid = gpu.uuid if gpu else ""
        elif values.budget is None or not _same_budget(values.budget, assignment):
            # The user's own budget (or none): no longer the planner's.
            assignment.budget_lowered_for_uuid = ""
        assignment.vram_budget_override = values.budget
    if assignment.is_falling_back and gpu is not None and gpu.uuid == assignment.fallback_gpu_uuid:
        # The row names where the service runs while its GPU is away (a page that saves every
        # row does that): keep the saved choice, so it comes back with the card.
        assignment.save()
        return
    assignment.gpu_index = gpu.index if gpu else None
    assignment.gpu_uuid = gpu.uuid if gpu else ""
    # The user chose another GPU: the fallback no longer applies.
    assignment.fallback_clear()
    assignment.save()


def _same_budget(budget: float, assignment: Assignment) -> bool:
    saved = assignment.vram_budget_override
    return saved is not None and round(saved, 2) == round(budget, 2)


def _lowered_budgets_release(names) -> list[str]:
    """Drop the planner-lowered budget of each of ``names`` that now sits on another GPU than
    the one it was lowered for, where the service's full need fits; returns what to tell the
    user. A budget the planner lowered belongs to that placement, not to the service."""
    notices = []
    for name in names:
        a = Assignment.objects.select_related("service").filter(service__name=name).first()
        if a is None or not a.budget_lowered_for_uuid or a.vram_budget_override is None:
            continue
        if a.effective_gpu_uuid in ("", a.budget_lowered_for_uuid):
            continue
        data = planning_input()
        full = {d.name: replace(d, budget_gb=None) if d.name == name else d for d in data.services}
        placements = [planner.Placement(d.name, d.current_gpu, d.budget_gb) for d in full.values()]
        gpu = next((g for g in data.gpus if g.index == a.effective_gpu_index), None)
        if gpu is None or planner.free_mb([gpu], list(full.values()), placements)[gpu.index] < 0:
            continue
        lowered = a.vram_budget_override
        a.vram_budget_override = None
        a.budget_lowered_for_uuid = ""
        a.save(update_fields=["vram_budget_override", "budget_lowered_for_uuid", "updated_at"])
        notices.append(
            f"{name}: the VRAM budget of {lowered:g} GB was lowered to fit its previous GPU; "
            f"its full need fits on {gpu_label(gpu)}, so it runs at its own budget again."
        )
    return notices


def _state() -> tuple:
    """What a version records: the strategy, each service's demand and its assignment."""
    data = planning_input()
    return GpuConfig.load().strategy, tuple(data.services), _snapshot(data)


def _change_save(
    change: Callable[[], str],
    *,
    source: str,
    user=None,
    actor: str = "",
    keep_unchanged: bool = False,
) -> SaveResult:
    """Run ``change`` (database writes; returns the strategy) in one transaction with a new
    ConfigVersion and the generated files staged for it. All or nothing: a refusal, or files
    that cannot be written (FilesUnwritable), leave the database and the files as they were.
    A change that changes nothing records no version; with ``keep_unchanged`` its writes are
    kept all the same (a catalog entry's text, which no version records)."""
    before = _state()
    with transaction.atomic():
        strategy = change()
        unchanged = _state() == before
        if unchanged:
            if not keep_unchanged:
                transaction.set_rollback(True)
        else:
            version, warnings = config_version_record(
                source=source, strategy=strategy, user=user, actor=actor, files_required=True
            )
    if unchanged:
        latest = _latest_version()
        return SaveResult(
            version=latest, warnings=list(latest.warnings) if latest else [], changed=False
        )
    return SaveResult(version=version, warnings=warnings)


def config_save(
    *,
    strategy: str | None = None,
    assignments: list[dict] | None = None,
    user=None,
    actor: str = "",
    source: str = ConfigVersion.Source.SAVE,
) -> SaveResult:
    """Validate, then save assignments and a ConfigVersion in one transaction, with both
    generated files staged and moved into place after commit. A refused request
    (``ConfigInvalid``, ``FilesUnwritable``) changes nothing; one that changes nothing records
    no version.

    With ``assignments`` the given services are set as given (others keep theirs). With only an
    automatic ``strategy``, its plan becomes the saved assignment (budgets are kept).
    ``source`` is what the version records (a rollback, an import).
    """
    data = planning_input()
    cleaned = _validate(strategy, assignments, data)
    config = GpuConfig.load()
    new_strategy = strategy or config.strategy
    if not cleaned and strategy is not None and strategy != "manual":
        cleaned = _planned_changes(strategy, data)

    def change() -> str:
        locked = GpuConfig.objects.select_for_update().get(pk=config.pk)
        if locked.strategy != new_strategy:
            locked.strategy = new_strategy
            locked.updated_by = user if getattr(user, "pk", None) else None
            locked.save()
        for name, values in cleaned.items():
            assignment, _ = Assignment.objects.get_or_create(service=data.catalog[name])
            _assignment_set(assignment, values)
        notices.extend(_lowered_budgets_release(cleaned))
        return new_strategy

    notices: list[str] = []
    result = _change_save(change, source=source, user=user, actor=actor)
    result.notices = notices if result.changed else []
    return result


def catalog_service_save(*, service: AiService, user=None) -> SaveResult:
    """Save a catalog entry edited by hand (VRAM need, enabled, flags, default budget), then
    re-plan as the configured strategy would (an automatic one places the services again; with
    ``manual`` the assignments stay), with a ConfigVersion and the files, all or nothing."""

    def change() -> str:
        service.full_clean()
        service.save()
        strategy = GpuConfig.load().strategy
        if strategy != "manual":
            data = planning_input()
            for name, values in _planned_changes(strategy, data).items():
                assignment, _ = Assignment.objects.get_or_create(service=data.catalog[name])
                _assignment_set(assignment, values)
        return strategy

    # Text (display name, model, description) changes no planning state, and is saved all the
    # same; only a change of the planning state records a version.
    return _change_save(change, source=ConfigVersion.Source.CATALOG, user=user, keep_unchanged=True)


def config_files_write() -> dict:
    """(Re)write both generated files from the saved configuration (a file already holding
    the right text is left alone)."""
    with _files_lock():
        data = planning_input()
        texts = _files_render(data, strategy=GpuConfig.load().strategy, version=_latest_version())
        staging.stage_files(texts).commit()
    return generated.written_paths(texts)


def config_files_sync() -> dict:
    """Repair the generated files from the database: after a crash between a save's commit and
    its rename, or a folder that was unwritable for a while. Removes temp files no save owns.
    Runs when a worker starts and periodically under beat; safe at any time."""
    removed = generated.stale_temp_files_remove(host_config_dir(), older_than_s=STALE_TEMP_S)
    return {**config_files_write(), "removed": removed}


def config_strategy_recorded(*, strategy: str, choices: Mapping[str, Any]) -> str:
    """The strategy a save of ``choices`` records (per service, what the page shows: an object
    with ``gpu_index`` and ``budget_gb``): ``strategy`` while they are its plan (or are left as
    saved under it), else ``manual``: an edited plan is the user's own."""
    if strategy == "manual" or strategy not in planner.STRATEGIES:
        return strategy
    data = planning_input()
    chosen = {name: (c.gpu_index, c.budget_gb) for name, c in choices.items()}
    saved = {d.name: (d.current_gpu, d.budget_gb) for d in data.services}
    if strategy == GpuConfig.load().strategy and chosen == saved:
        return strategy
    try:
        plan, _data = config_preview(strategy=strategy)
    except planner.UnknownStrategy:
        return strategy
    proposed = {p.service: p for p in plan.placements}
    # A strategy that proposes no budget keeps the one shown.
    same = all(
        name not in proposed
        or (
            proposed[name].gpu_index == gpu
            and (proposed[name].budget_gb is None or same_budget(proposed[name].budget_gb, budget))
        )
        for name, (gpu, budget) in chosen.items()
    )
    return strategy if same else "manual"
