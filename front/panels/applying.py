"""Front room, the GPU Configuration page's view model: the apply panel: what an apply would
change, and its live progress.
Nothing here writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from applies.applying import devices_differ
from applies.models import ApplyRun
from applies.runtime.base import Step
from applies.services import ApplyPreview
from assignments.planner.types import same_budget


@dataclass(frozen=True)
class ApplyChange:
    service: str
    current_devices: tuple[str, ...] | None  # None: no container
    target_devices: tuple[str, ...]
    current_budget: float | None
    target_budget: float | None
    restart: bool
    # How it would move (applies/moves.py): "zero_downtime" or "restart", and why.
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
    agent_host: str = ""  # another host: its agent compares and recreates
    targets: list = field(default_factory=list)  # what that agent is sent, per service

    @property
    def restarts(self) -> list[ApplyChange]:
        return [c for c in self.changes if c.restart]

    @property
    def missing(self) -> list[ApplyChange]:
        return [c for c in self.changes if c.missing]


def apply_plan(preview: ApplyPreview) -> ApplyPlan:
    """What Apply would do, for the confirmation: ``preview`` is the saved configuration
    compared with the running containers (``applies.services.apply_preview``)."""
    if preview.error:
        return ApplyPlan(changes=[], error=preview.error)
    if preview.agent_host:
        return ApplyPlan(changes=[], agent_host=preview.agent_host, targets=preview.targets)
    changes, modes = preview.changes, preview.modes
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
        runtime=engine_label(preview.runtime_label, preview.runtime_where),
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
