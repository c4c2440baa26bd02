"""Applies room. The contract between gpuconfig and a container engine."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class RuntimeUnavailable(Exception):
    """The container engine cannot be reached; the message says where it was looked for."""


class EngineError(Exception):
    """An engine call failed in a way the caller should report."""


# A device id that stands for every GPU of the machine (compose ``count: all``).
ALL_DEVICES = "all"


class Outcome(enum.StrEnum):
    HEALTHY = "healthy"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class Step(enum.StrEnum):
    """Per-service progress states, in the order an apply moves through them."""

    PENDING = "pending"
    STOPPING = "stopping"
    RECREATING = "recreating"
    STARTING = "starting"
    WAITING_HEALTH = "waiting_health"
    HEALTHY = "healthy"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    UNCHANGED = "unchanged"
    INTERRUPTED = "interrupted"  # the worker died; recovery finished or undid the step


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What a service's container runs now.

    ``device_ids`` are the ids of its NVIDIA device request (indices or UUIDs as written), empty
    when it requests no GPU; ``budget_gb`` is its ``VRAM_BUDGET_GB`` (None when unset).
    ``health`` is the engine's health status (``healthy``, ``unhealthy``, ``starting``) or None
    when the image defines no healthcheck.
    """

    id: str
    name: str
    status: str
    health: str | None
    device_ids: tuple[str, ...]
    budget_gb: float | None


@dataclass(frozen=True, slots=True)
class ContainerListing:
    """A container of the engine as a list of them names it: full id, name and labels."""

    id: str
    name: str
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class RecreateResult:
    """How a recreate ended. ``downtime_s``: seconds from the old copy no longer answering to
    the new one answering (0 for a make-before-break move; None when not measured)."""

    outcome: Outcome
    message: str = ""
    container_id: str | None = None
    downtime_s: float | None = None


# progress(step, message) is called as the recreate moves through its steps.
Progress = Callable[[Step, str], None]


class JournalStep(enum.StrEnum):
    """What a recreate records before each engine step, so that recovery knows what to undo.

    Each is written before the step it names is taken (``created`` and ``done`` once they have
    happened: only then is the new container's id known, or the old one gone).
    """

    STOPPING = "stopping"
    RENAMING = "renaming"
    CREATING = "creating"
    CREATED = "created"
    HEALTHY = "healthy"
    DONE = "done"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    RESTORE_FAILED = "restore_failed"
    RECOVERED = "recovered"


# Steps after which nothing is left for recovery to do.
JOURNAL_SETTLED = frozenset({JournalStep.DONE, JournalStep.ROLLED_BACK, JournalStep.RECOVERED})

# journal(entry) is called with the service's whole record: {"step", "name", "old_id",
# "new_id", "was_running"}; it must have stored it when it returns.
Journal = Callable[[dict], None]


class ContainerRuntime:
    """Finds and recreates the container of a service.

    A service's container is the one labelled ``com.docker.compose.service=<service>`` (within
    the configured compose project when one is set), else the one named after the service.

    - ``inspect(service)`` returns its ``ContainerState`` or None when there is none.
    - ``recreate(service, device_ids=..., budget_gb=..., progress=...)`` replaces it with a copy
      that differs only in its NVIDIA device request and ``VRAM_BUDGET_GB``, waits for health,
      and on any failure restores the old container under its name (never leaving the service
      without a container). ``before_start`` is called once the old container has stopped and
      before the new one is created; the apply orchestrator uses it to wait until the services
      leaving the target GPU have stopped (VRAM freed before it is claimed); if it raises, the
      recreate is rolled back with its message as the reason. ``labels`` are set on the new
      container over the old one's (the compose tool's config hash of the written files, so
      that a later ``compose up`` sees nothing to change). Returns the outcome; it does not
      raise for a failed recreate. ``journal``, when given, is called with the service's record
      (``JournalStep`` reached, container name, old and new container ids, whether the old one
      was running) before each engine step.
      ``move_mode="zero_downtime"`` asks for a make-before-break move instead (the engine
      runtimes: ``handover.py``); it is passed only to runtimes that can do it
      (``handover.move_facts``), and only where the move mode's rule allowed it (``moves.py``).
    - ``recover(journal)`` repairs what interrupted recreates left behind and returns the
      services whose previous container it restored. ``journal`` maps services to the records
      of runs that did not finish (``JOURNAL_SETTLED`` ones are skipped): a new container that
      became healthy and still runs is kept (the old one removed), else the new one is removed
      and the old one gets its name back and runs again if it ran before, including an old
      container stopped under its own name. Any container still carrying the aside name is
      then restored the same way, from the engine's state alone.
    - ``containers()`` lists every container of the engine (any project) with its labels; it
      names the containers that hold GPU memory. A runtime without real containers lists none.
    Engine unreachable: ``RuntimeUnavailable`` from any call; another engine failure:
    ``EngineError``. ``name`` (``docker``, ``podman``) and ``where`` say which engine is in use.

    Every runtime takes the same keyword arguments, so ``get_runtime()`` can build any of them:
    ``project`` (only containers of this compose project are managed; None: any),
    ``health_timeout`` (seconds a recreated container has to become healthy; ``recreate``'s own
    ``health_timeout`` overrides it per call) and ``health_grace`` (seconds a container without
    a healthcheck must keep running to count as healthy).
    """

    name: str = "base"
    # Shown to people: the engine's name and where it is reached (set by each runtime).
    label: str = "container engine"
    # Whether two copies of a service can run side by side (a make-before-break move needs it;
    # the engines' runtimes can, the simulated one cannot).
    runs_two_copies: bool = False

    @property
    def where(self) -> str:
        """Where the engine is reached (a socket URL), in words; empty when unknown."""
        return ""

    def __init__(
        self,
        *,
        project: str | None = None,
        health_timeout: float = 180.0,
        health_grace: float = 3.0,
    ) -> None:
        self.project = project or None
        self.health_timeout = health_timeout
        self.health_grace = health_grace

    def inspect(self, service: str) -> ContainerState | None:  # pragma: no cover - contract
        raise NotImplementedError

    def recreate(
        self,
        service: str,
        *,
        device_ids: tuple[str, ...],
        budget_gb: float | None,
        progress: Progress,
        before_start: Callable[[], None] | None = None,
        health_timeout: float | None = None,
        labels: Mapping[str, str] | None = None,
        journal: Journal | None = None,
    ) -> RecreateResult:  # pragma: no cover - contract
        raise NotImplementedError

    def containers(self) -> list[ContainerListing]:
        return []

    def recover(self, journal: dict[str, dict] | None = None) -> list[str]:  # pragma: no cover
        raise NotImplementedError
