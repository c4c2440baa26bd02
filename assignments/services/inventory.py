"""Assignments room. Writes that keep the saved assignments true to the GPU inventory: the initial
plan the first time GPUs are seen, fallback while a saved GPU is lost, restore when it returns.

``gpus`` announces each changed inventory (``gpus.signals.inventory_changed``); this app
connects :func:`inventory_changed_receiver` in ``AssignmentsConfig.ready``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from assignments import planner
from assignments.models import Assignment, ConfigVersion, GpuConfig
from assignments.planner.checks import gpu_label
from assignments.planner.types import Placement
from assignments.selectors import fallback_message, planning_input
from assignments.services.config import config_version_record
from gpus.models import Gpu

logger = logging.getLogger(__name__)

ACTOR = "gpuconfig"


@dataclass
class _Inventory:
    """The GPU rows as the last scan left them, and what following them changed."""

    by_uuid: dict[str, Gpu]
    available_by_index: dict[int, Gpu]
    now: datetime
    changes: dict[str, list[str]] = field(
        default_factory=lambda: {"reindexed": [], "fallback": [], "restored": [], "unplaced": []}
    )

    @classmethod
    def load(cls) -> _Inventory:
        by_uuid = {g.uuid: g for g in Gpu.objects.all()}
        available = {g.index: g for g in by_uuid.values() if g.available}
        return cls(by_uuid=by_uuid, available_by_index=available, now=timezone.now())

    def saved_gpu(self, a: Assignment) -> Gpu | None:
        return self.by_uuid.get(a.gpu_uuid) if a.gpu_uuid else None


def _assignments_initial() -> dict:
    """The first time GPUs are seen, the configured strategy's plan becomes the saved one.

    VRAM in use at that point is taken to be the services' own (they usually run already), so
    the plan sees the whole of each card.
    """
    data = planning_input()
    gpus = [replace(g, foreign_used_mb=0) for g in data.gpus]
    configured = GpuConfig.load().strategy
    strategy = "vram_based" if configured == "manual" else configured
    plan = planner.plan(strategy, gpus, data.services, data.rules)
    by_index = {g.index: g for g in Gpu.objects.filter(available=True)}
    lowered = planner.budgets_lowered(plan, data.services)
    for p in plan.placements:
        gpu = by_index.get(p.gpu_index) if p.gpu_index is not None else None
        Assignment.objects.create(
            service=data.catalog[p.service],
            gpu_index=gpu.index if gpu else None,
            gpu_uuid=gpu.uuid if gpu else "",
            vram_budget_override=lowered.get(p.service),
            # The lowered budget is this placement's: it goes when the service moves away.
            budget_lowered_for_uuid=gpu.uuid if gpu and p.service in lowered else "",
        )
    config_version_record(source=ConfigVersion.Source.INITIAL, strategy=configured, actor=ACTOR)
    logger.info("Initial GPU assignments saved from the %s plan", strategy)
    return {"initial": [p.service for p in plan.placements]}


def _follow_saved_gpu(a: Assignment, inv: _Inventory) -> None:
    """A present saved GPU: follow its index, and end a fallback from it."""
    saved = inv.saved_gpu(a)
    if saved is None and a.gpu_index is not None and not a.gpu_uuid:
        # Saved by index only: remember the card now at that index by its UUID.
        saved = inv.available_by_index.get(a.gpu_index)
        if saved:
            a.gpu_uuid = saved.uuid
            a.save(update_fields=["gpu_uuid", "updated_at"])
    if not (saved and saved.available):
        return
    dirty = []
    if a.gpu_index != saved.index:
        a.gpu_index = saved.index
        dirty.append("gpu_index")
        inv.changes["reindexed"].append(a.service.name)
    if a.is_falling_back:
        logger.info(
            "%s: %s is back; restoring the saved assignment", a.service.name, gpu_label(saved)
        )
        a.fallback_clear()
        dirty += Assignment.FALLBACK_FIELDS
        inv.changes["restored"].append(a.service.name)
    if dirty:
        a.save(update_fields=[*dirty, "updated_at"])


def _fallback_target(a: Assignment, inv: _Inventory) -> Gpu | None:
    """The available GPU with the most VRAM left once every other service is placed."""
    data = planning_input()
    others = [
        Placement(d.name, d.current_gpu, d.budget_gb)
        for d in data.services
        if d.name != a.service.name
    ]
    index = planner.fallback_gpu(data.gpus, data.services, others)
    return inv.available_by_index.get(index) if index is not None else None


def _follow_lost_gpu(a: Assignment, inv: _Inventory) -> None:
    """A lost saved GPU: fall back to the GPU with the most free VRAM, or report the service
    unplaced when none is left. A fallback already in place stays where it is."""
    if a.gpu_index is None and not a.gpu_uuid:
        return  # never assigned: nothing to fall back from
    saved = inv.saved_gpu(a)
    if saved is not None and saved.available:
        return
    current = inv.by_uuid.get(a.fallback_gpu_uuid) if a.fallback_gpu_uuid else None
    if a.is_falling_back and current is not None and current.available:
        if a.fallback_gpu_index != current.index:
            a.fallback_gpu_index = current.index
            a.save(update_fields=["fallback_gpu_index", "updated_at"])
        return
    target = _fallback_target(a, inv)
    if a.is_falling_back and a.fallback_gpu_uuid == (target.uuid if target else ""):
        return  # already falling back there: not a change
    a.fallback_set(lost_uuid=a.gpu_uuid, target=target, since=inv.now)
    a.save(update_fields=[*Assignment.FALLBACK_FIELDS, "updated_at"])
    inv.changes["fallback" if target else "unplaced"].append(a.service.name)
    logger.warning(fallback_message(a.service.name, a, inv.by_uuid))


def _version_source(changes: dict[str, list[str]]) -> str:
    if changes["fallback"] or changes["unplaced"]:
        return ConfigVersion.Source.FALLBACK
    if changes["restored"]:
        return ConfigVersion.Source.RESTORE
    return ConfigVersion.Source.REINDEX


@transaction.atomic
def assignments_follow_inventory(*, files_required: bool = False) -> dict:
    """Keep the saved assignments true to the hardware after a scan.

    - a card whose index changed: the assignment follows its UUID, with the new index;
    - a saved GPU that is lost: the service falls back to the available GPU with the most free
      VRAM (WARNING logged, shown as a warning), or is reported unplaced when none is left;
    - the saved GPU is back: the fallback is cleared and the saved choice applies again.
    Anything changed is recorded as a ConfigVersion and the generated files are rewritten after
    commit. Returns the services concerned, by kind of change. With ``files_required`` (a
    change made by hand) files that cannot be written raise FilesUnwritable, refusing it all.
    """
    inv = _Inventory.load()
    if inv.available_by_index and not Assignment.objects.exists():
        return _assignments_initial()
    rows = list(
        Assignment.objects.select_related("service")
        .select_for_update()
        .filter(service__enabled=True)
    )
    for a in rows:
        _follow_saved_gpu(a, inv)
    # Fallbacks are placed one by one so each sees the VRAM the previous ones took.
    for a in rows:
        _follow_lost_gpu(a, inv)
    if any(inv.changes.values()):
        config_version_record(
            source=_version_source(inv.changes),
            strategy=GpuConfig.load().strategy,
            actor=ACTOR,
            files_required=files_required,
        )
    return {k: v for k, v in inv.changes.items() if v}


def inventory_changed_receiver(sender, **kwargs) -> None:
    """``gpus.signals.inventory_changed``: the assignments follow the new inventory."""
    follow = assignments_follow_inventory(files_required=kwargs.get("by_hand", False))
    if follow:
        logger.info("Assignments followed the inventory: %s", follow)
