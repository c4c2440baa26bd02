"""Front room, the fleet overview's view model: one row per registered host (state, GPUs, VRAM
in use, problems, last apply), and the host switcher of the GPU Configuration page.
Nothing here writes.

The fleet-wide parts are grouped reads over ``all_hosts`` (a fixed number of queries however
many hosts there are). A host's problems are its own page's (``config_issues`` under
``host_scope``), kept in the cache under that host's configuration state, so a render reads
them with one cache round trip per host and plans nothing while no host changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from applies.models import ApplyRun
from assignments.planner.checks import gpu_label
from assignments.selectors import config_issues, config_state_cached, planning_input
from fleet.models import Host, HostState
from fleet.selectors import fleet_gpu_totals, fleet_last_applies, host_state
from gpuconfig_site.hosts import default_host_name, host_scope

MB_PER_GB = 1024
# Problems that make a host's row red; the rest are counted as warnings.
SEVERE = frozenset({"over_capacity", "gpu_missing", "unplaced", "budget_too_large"})


@dataclass(frozen=True)
class HostProblems:
    """A host's problems as its page counts them: the over-committed GPUs, the services falling
    back from a lost GPU, and every other problem by severity."""

    over_committed: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    errors: int = 0
    warnings: int = 0

    @property
    def total(self) -> int:
        return self.errors + self.warnings

    @property
    def tone(self) -> str:
        if self.errors:
            return "bad"
        return "warn" if self.warnings else "ok"


@dataclass(frozen=True)
class HostRow:
    """One host of the overview."""

    name: str
    display_name: str
    state: str  # HostState's value
    last_seen: datetime | None
    is_default: bool
    gpus_present: int
    gpus_lost: int
    used_mb: int
    total_mb: int
    problems: HostProblems
    last_apply: ApplyRun | None

    @property
    def state_label(self) -> str:
        return HostState(self.state).label

    @property
    def online(self) -> bool:
        return self.state == HostState.ONLINE

    @property
    def used_percent(self) -> int:
        return round(self.used_mb / self.total_mb * 100) if self.total_mb else 0

    @property
    def apply_time(self) -> datetime | None:
        run = self.last_apply
        return None if run is None else (run.finished_at or run.started_at or run.created_at)


def _problems_read() -> HostProblems:
    """The host at hand's problems, from the same issues its page shows."""
    data = planning_input()
    issues = config_issues(data)
    gpus = {g.index: g for g in data.gpus}
    over = sorted({i.gpu_index for i in issues if i.code == "over_capacity"} - {None})
    fallbacks = sorted({i.service for i in issues if i.code == "fallback" and i.service})
    severe = sum(1 for i in issues if i.code in SEVERE or i.code == "fallback")
    notes = sum(1 for i in issues if i.severity == "info")
    return HostProblems(
        over_committed=tuple(gpu_label(gpus.get(index), index) for index in over),
        fallbacks=tuple(fallbacks),
        errors=severe,
        warnings=len(issues) - severe - notes,
    )


def host_problems(name: str) -> HostProblems:
    """``name``'s problems, kept under its configuration state (a save, a scan or a GPU change
    of that host is read at once)."""
    with host_scope(name):
        return config_state_cached("fleet-problems", _problems_read)


def fleet_rows() -> list[HostRow]:
    """Every registered host, by name: three grouped queries and one cache read per host."""
    hosts = list(Host.objects.all())
    totals = fleet_gpu_totals()
    applies = fleet_last_applies()
    default = default_host_name()
    empty = {"present": 0, "lost": 0, "used_mb": 0, "total_mb": 0}
    rows = []
    for host in hosts:
        gpus = totals.get(host.name, empty)
        rows.append(
            HostRow(
                name=host.name,
                display_name=host.display_name or host.name,
                state=host_state(host).value,
                last_seen=host.last_heartbeat,
                is_default=host.name == default,
                gpus_present=gpus["present"],
                gpus_lost=gpus["lost"],
                used_mb=gpus["used_mb"],
                total_mb=gpus["total_mb"],
                problems=host_problems(host.name),
                last_apply=applies.get(host.name),
            )
        )
    return rows


@dataclass(frozen=True)
class SwitcherHost:
    name: str
    label: str
    state: str

    @property
    def state_label(self) -> str:
        return HostState(self.state).label


@dataclass(frozen=True)
class HostSwitcher:
    """The GPU Configuration page's host at hand and the others it can switch to (``hosts``
    empty on a single box: no switcher is shown)."""

    current: str
    current_label: str
    state: str
    last_seen: datetime | None
    hosts: tuple[SwitcherHost, ...]

    @property
    def offline(self) -> bool:
        return self.state != HostState.ONLINE

    @property
    def state_label(self) -> str:
        return HostState(self.state).label


def host_switcher(current: str) -> HostSwitcher:
    """The switcher for a page on ``current``: one query over the registered hosts."""
    hosts = list(Host.objects.only("name", "display_name", "last_heartbeat"))
    found = next((h for h in hosts if h.name == current), None)
    state = HostState.ONLINE if found is None else host_state(found)
    return HostSwitcher(
        current=current,
        current_label=(found.display_name or found.name) if found else current,
        state=state.value,
        last_seen=found.last_heartbeat if found else None,
        hosts=tuple(
            SwitcherHost(h.name, h.display_name or h.name, host_state(h).value) for h in hosts
        )
        if len(hosts) > 1
        else (),
    )
