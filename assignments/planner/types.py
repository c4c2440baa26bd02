"""Plain data the planner works on. No Django, no settings, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpus.units import MB_PER_GB


def format_budget_gb(budget_gb: float) -> str:
    """A VRAM budget as ``VRAM_BUDGET_GB`` carries it: ``3.5``, ``4``, ``6.8``."""
    return f"{round(float(budget_gb), 3):g}"


@dataclass(frozen=True, slots=True)
class GpuView:
    """One GPU as the planner sees it.

    ``foreign_used_mb`` is VRAM held by processes gpuconfig does not manage (it is not free for
    the services being planned). ``available`` is False for a GPU that was lost: nothing new is
    placed on it, and a placement that names it is reported.
    """

    index: int
    uuid: str
    name: str
    total_mb: int
    foreign_used_mb: int = 0
    compute_capability: tuple[int, int] = (0, 0)
    available: bool = True


@dataclass(frozen=True, slots=True)
class ServiceDemand:
    """One service to place.

    ``need_mb`` is the VRAM the service needs with its default settings. A service with
    ``budget_adjustable`` reads a VRAM budget (``VRAM_BUDGET_GB``); its effective need is
    ``budget_gb`` when set, else ``default_budget_gb`` (both in GB, 1 GB = 1024 MB).
    ``min_budget_gb`` is the smallest budget worth running it with: no budget below it is
    suggested or applied. ``current_gpu`` is the user's (saved) choice, used by the manual
    strategy. ``need_source`` says where ``need_mb`` comes from: ``catalog`` (the estimate,
    ``catalog_mb`` when it differs) or ``measured`` (p95 of its measured use plus a margin).
    """

    name: str
    need_mb: int
    latency_critical: bool = False
    isolated: bool = False
    budget_adjustable: bool = False
    default_budget_gb: float | None = None
    current_gpu: int | None = None
    budget_gb: float | None = None
    min_budget_gb: float | None = None
    need_source: str = "catalog"
    catalog_mb: int | None = None

    @property
    def effective_mb(self) -> int:
        """VRAM this service will take, honouring a budget override."""
        if self.budget_adjustable:
            budget = self.budget_gb if self.budget_gb is not None else self.default_budget_gb
            if budget is not None:
                return round(budget * MB_PER_GB)
        return self.need_mb


@dataclass(frozen=True, slots=True)
class ServiceRule:
    """A rule the user sets for one service (see :mod:`.rules`).

    ``pin_gpu_uuid``: the service runs on that GPU (by UUID, so re-indexing does not move it).
    ``exclusive``: no other service shares its GPU. ``never_with``: services never placed on
    its GPU. ``priority``: higher wins when memory is short (its budget is lowered last) and
    when rules cannot all hold (its rules give way last).
    """

    service: str
    pin_gpu_uuid: str | None = None
    exclusive: bool = False
    never_with: tuple[str, ...] = ()
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one service goes. ``gpu_index`` is None when it could not be placed."""

    service: str
    gpu_index: int | None
    budget_gb: float | None = None


WARNING = "warning"
NOTICE = "info"


@dataclass(frozen=True, slots=True)
class Issue:
    """A structured warning or notice. ``code`` lets a client act on it.

    ``severity`` is ``warning`` for a problem and ``info`` for something the planner did on its
    own (``budget_auto_adjusted``). ``suggested_budget_gb`` is the fix a client may offer ("Use
    3.5 GB") for ``service``. ``needed_mb`` and ``available_mb`` are the VRAM the message is
    about: for a GPU, what its services need and what it offers them (total less foreign use);
    for one service, its need and what its GPU can give it. ``rules`` names the user's rules a
    ``rule_conflict`` or ``rule_broken`` issue is about, ``remedies`` the changes that would
    let them hold.
    """

    code: str
    message: str
    service: str | None = None
    gpu_index: int | None = None
    suggested_budget_gb: float | None = None
    severity: str = WARNING
    needed_mb: int | None = None
    available_mb: int | None = None
    rules: tuple[str, ...] = ()
    remedies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of planning: one placement per service (input order) and the warnings."""

    strategy: str
    placements: tuple[Placement, ...]
    issues: tuple[Issue, ...] = field(default_factory=tuple)

    def gpu_of(self, service: str) -> int | None:
        for placement in self.placements:
            if placement.service == service:
                return placement.gpu_index
        raise KeyError(service)

    @property
    def warnings(self) -> list[str]:
        """Warnings and notices as plain messages, the form API clients expect."""
        return [issue.message for issue in self.issues]

    def budget_of(self, service: str) -> float | None:
        """The VRAM budget (GB) the plan gives ``service``; None keeps its default."""
        for placement in self.placements:
            if placement.service == service:
                return placement.budget_gb
        raise KeyError(service)


def same_budget(a: float | None, b: float | None) -> bool:
    """Whether two VRAM budgets (GB, None: unset) are the same to the MB."""
    if a is None or b is None:
        return a is b
    return round(a, 3) == round(b, 3)
