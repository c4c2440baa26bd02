"""Front room, the GPU Configuration page's view model: the status strip: inventory, engine and
latest apply at a glance.
Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from applies.live import live_cached
from applies.models import ApplyRun
from applies.selectors import apply_run_latest, run_stall
from gpuconfig_site.hosts import host_is_local
from gpus.selectors import (
    detection_mode,
    gpu_list,
    inventory_read_cached,
)


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

    mode = detection_mode()
    # This machine's settings say whether its own GPUs are simulated; another host's are as
    # its agent's last scan reported them.
    simulated = mode["simulated"] if host_is_local() else mode["backend"] == "simulated"
    present, lost = inventory_read_cached("counts", _gpu_counts)
    live = live_cached() or {}
    return StatusStrip(
        simulated=simulated,
        backend=mode["backend"] or "",
        gpus_present=present,
        gpus_lost=lost,
        problem_count=problem_count,
        apply_run=apply_run_latest(),
        runtime_label=live.get("runtime_label", ""),
        engine_reachable=live.get("reachable"),
        engine_error=live.get("error", ""),
    )
