"""Front room, the GPU Configuration page's view model: strategies and the preview of a strategy's
plan.
Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from assignments import planner
from assignments.models import GpuConfig
from assignments.planner.checks import gpu_label
from assignments.planner.types import GpuView, Issue
from assignments.selectors import (
    config_preview,
    config_state_cached,
)


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
