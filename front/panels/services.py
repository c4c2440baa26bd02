"""Front room, the GPU Configuration page's view model: the services panel: each service's
container, health, GPU and memory use.
Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from applies.live import NO_ENGINE_HELP, live_cached
from applies.runtime.simulated import LABEL as SIMULATED_LABEL
from applies.runtime.simulated import simulated_runtime_enabled
from applies.selectors import apply_status
from assignments.planner.checks import gpu_label
from assignments.planner.types import GpuView
from assignments.selectors import (
    PlanningInput,
    planning_input_cached,
)
from front.panels.applying import STEP_LABELS
from front.panels.preview import gpu_name
from front.panels.table import SEGMENT_COLOURS
from gpus.selectors import detection_mode
from gpus.units import MB_PER_GB

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
    (``data``, ``status``: the planning input and ``apply_status(snapshot=live_cached())``, if
    read)."""

    data = data or planning_input_cached()
    status = status or apply_status(snapshot=live_cached(), data=data)
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
