"""Applies room. What every engine's runtime shares: finding a service's container, the recreate
sequence with its rollback, and recovery after an interrupted apply, over a small set of engine
calls.

An engine's runtime subclasses ``EngineRuntime`` (``engine.py``, which chooses between this
sequence and ``handover``'s) and implements ``connect()``, which yields an ``Engine``: one
connection's worth of calls in the shapes this module needs. Nothing here knows
which engine answers.

recreate: stop the old container → rename it aside (``spec.aside_name``) → ``before_start()``
→ create the copy under the original name → start it → wait for ``healthy`` (running the
healthcheck itself where the engine does not; ``health_grace`` seconds of running when the
image has none; ``unhealthy`` or an exit fails at once) → remove the old one. On any failure
the copy is removed and the old container is renamed back and started again: ``rolled_back``,
with the reason and the copy's last log lines; ``failed`` if even that restore did not work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import (
    ContainerState,
    Journal,
    JournalStep,
    Outcome,
    Progress,
    RecreateResult,
    Step,
)
from .spec import (
    Replacement,
    aside_name,
    budget_of,
)

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 20
POLL_INTERVAL = 0.2
DEFAULT_STOP_TIMEOUT = 10
EXITED = ("exited", "dead", "stopped")


class EngineLost(Exception):
    """The connection to the engine failed during a call (as opposed to the engine refusing)."""


@dataclass(frozen=True, slots=True)
class Listed:
    """A container as the engine lists it."""

    id: str
    name: str
    running: bool
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class Seen:
    """A container as inspected, in the terms the recreate needs. ``attrs`` is the engine's own
    inspect data, from which the engine builds the copy."""

    id: str
    name: str
    status: str
    health: str | None
    health_output: str
    exit_code: int | None
    error: str
    restarts: int
    labels: dict[str, str]
    device_ids: tuple[str, ...]
    budget_gb: float | None
    stop_timeout: int
    attrs: dict[str, Any] = field(repr=False)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def state(self) -> ContainerState:
        return ContainerState(
            id=self.id,
            name=self.name,
            status=self.status,
            health=self.health,
            device_ids=self.device_ids,
            budget_gb=self.budget_gb,
        )


def seen_from_inspect(attrs: dict[str, Any], *, device_ids: tuple[str, ...]) -> Seen:
    """A ``Seen`` from inspect data in the shape Docker and Podman share (their GPU requests
    differ, so the caller reads ``device_ids``)."""
    state = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    health = state.get("Health") or {}
    log = health.get("Log") or []
    return Seen(
        id=attrs["Id"],
        name=attrs["Name"].lstrip("/"),
        status=(state.get("Status") or "unknown").lower(),
        health=health.get("Status") or None,
        health_output=(log[-1].get("Output") or "").strip() if log else "",
        exit_code=state.get("ExitCode"),
        error=state.get("Error") or "",
        restarts=attrs.get("RestartCount") or 0,
        labels=dict(config.get("Labels") or {}),
        device_ids=device_ids,
        budget_gb=budget_of(config.get("Env")),
        stop_timeout=config.get("StopTimeout") or DEFAULT_STOP_TIMEOUT,
        attrs=attrs,
    )


class Engine:
    """One connection to an engine, in the shapes the shared recreate needs.

    A refused call raises one of ``errors``; a call that lost the connection raises
    ``EngineLost``. ``inspect`` returns None for a container that does not exist and ``remove``
    ignores one; the others raise.
    """

    errors: tuple[type[BaseException], ...] = ()

    def explain(self, exc: BaseException) -> str:
        return str(exc)

    def list(self, *, labels: Sequence[str] = (), name: str | None = None) -> list[Listed]:
        raise NotImplementedError

    def inspect(self, ref: str) -> Seen | None:
        raise NotImplementedError

    def stop(self, seen: Seen) -> None:
        raise NotImplementedError

    def rename(self, container_id: str, name: str) -> None:
        raise NotImplementedError

    def create_copy(self, old: Seen, *, name: str, change: Replacement) -> str:
        """Create (not start) a copy of ``old`` named ``name`` that differs only by ``change``;
        returns its id."""
        raise NotImplementedError

    def start(self, container_id: str) -> None:
        raise NotImplementedError

    def check_health(self, seen: Seen) -> Seen:
        """Where the engine does not run healthchecks by itself, run one when it is due and
        return the container as it is now; by default the engine runs them."""
        return seen

    def logs(self, container_id: str, tail: int) -> str:
        raise NotImplementedError

    def remove(self, container_id: str, *, force: bool = False) -> None:
        raise NotImplementedError

    # -- make-before-break moves (handover.py) ---------------------------------------------

    def network_problem(self, network: str) -> str:
        """Why a copy cannot take over a service alias on ``network`` (empty: it can)."""
        return "this engine cannot move a service between copies"

    def connect(self, container_id: str, network: str, aliases: list[str]) -> None:
        raise NotImplementedError

    def disconnect(self, container_id: str, network: str) -> None:
        raise NotImplementedError


def by_name_of(engine: Engine, name: str) -> Seen | None:
    """The container named exactly ``name`` (an id prefix that happens to match is not it)."""
    seen = engine.inspect(name)
    return seen if seen is not None and seen.name == name else None


def recover_recorded(engine: Engine, entry: dict[str, Any]) -> bool:
    """Finish or undo one service's interrupted recreate from its record (``JournalStep``);
    returns whether the old container was put back."""
    name: str = entry["name"]
    old = engine.inspect(entry["old_id"])
    new = engine.inspect(entry["new_id"]) if entry.get("new_id") else None
    if new is None and entry.get("step") != JournalStep.STOPPING:
        # Killed between the create and its record: the copy is whatever holds the name.
        holder = by_name_of(engine, name)
        if holder is not None and (old is None or holder.id != old.id):
            new = holder
    if new is not None and _proved_healthy(engine, new, entry.get("step")):
        if old is not None:
            logger.warning("keeping the healthy replacement of %s; removing the old one", name)
            engine.remove(old.id, force=True)
        return False
    if old is None:
        logger.error("the previous container of %s is gone; nothing to restore", name)
        return False
    if new is not None:
        logger.warning("removing the unfinished replacement %s (%s)", name, new.id[:12])
        engine.remove(new.id, force=True)
    renamed = old.name != name
    if renamed:
        logger.warning("restoring %s as %s", old.name, name)
        engine.rename(old.id, name)
    if entry.get("was_running", True) and not old.running:
        logger.warning("starting %s again", name)
        engine.start(old.id)
        return True
    return renamed or new is not None


# The steps after which the copy is the one the apply meant to keep, if it is healthy: it was
# being created, started or waited for. After ``rolling_back`` the apply had given up on it.
_KEEPABLE = (JournalStep.CREATING, JournalStep.CREATED, JournalStep.HEALTHY)


def _proved_healthy(engine: Engine, new: Seen, step: str | None) -> bool:
    """Whether an interrupted recreate's copy is to be kept: the record says it was healthy, or
    the container is healthy now (it became healthy after the worker died, mid health wait).
    A copy without a healthcheck counts only on the record: running says nothing yet."""
    if not new.running or step not in _KEEPABLE:
        return False
    if step == JournalStep.HEALTHY:
        return True
    if new.health is None:
        return False
    return engine.check_health(new).health == "healthy"


def recover_one(engine: Engine, aside: Listed, original: str) -> bool:
    """Put an aside container back under its name unless its replacement proved healthy;
    returns whether it was put back."""
    current = by_name_of(engine, original)
    if current is not None:
        if current.running and current.health in (None, "healthy"):
            # The interrupted apply got as far as a working replacement: finish it.
            logger.warning(
                "removing %s: %s already runs a healthy replacement", aside.name, original
            )
            engine.remove(aside.id, force=True)
            return False
        logger.warning("removing the unfinished replacement %s (%s)", original, current.id[:12])
        engine.remove(current.id, force=True)
    logger.warning("restoring %s as %s", aside.name, original)
    engine.rename(aside.id, original)
    engine.start(aside.id)
    return True


def emit(progress: Progress, step: Step, message: str) -> None:
    # A progress sink that fails (say, Redis is down) must not leave a recreate half done.
    try:
        progress(step, message)
    except Exception:
        logger.exception("progress callback failed at %s", step)


def _failure_of(seen: Seen) -> str:
    """Why a new container has already failed (empty: not failed, yet)."""
    if seen.status in EXITED:
        return f"the new container exited with code {seen.exit_code}" + (
            f" ({seen.error})" if seen.error else ""
        )
    # A restart policy hides a crash on start: count restarts as the failure they are.
    if seen.status == "restarting" or seen.restarts:
        return (
            f"the new container crashed and was restarted by its restart policy "
            f"(last exit code {seen.exit_code})"
        )
    if seen.health == "unhealthy":
        detail = seen.health_output
        return "the new container is unhealthy" + (
            f": healthcheck said {detail!r}" if detail else ""
        )
    return ""


class _Failure(Exception):
    """A step of a recreate failed; the message is the reason shown to the user."""


class Recreate:
    """One recreate of one container, with what it has done so far for the rollback to undo:
    ``renamed`` (the old container carries its aside name) and ``new_id`` (the copy exists)."""

    def __init__(
        self,
        *,
        engine: Engine,
        old: Seen,
        change: Replacement,
        progress: Progress,
        before_start: Callable[[], None] | None,
        health_timeout: float,
        health_grace: float,
        journal: Journal | None = None,
    ) -> None:
        self.engine = engine
        self.old = old
        self.name = old.name
        self.change = change
        self.progress = progress
        self.before_start = before_start
        self.health_timeout = health_timeout
        self.health_grace = health_grace
        self.was_running = old.running
        self.renamed = False
        self.new_id: str | None = None
        self.journal = journal
        # When the old container stopped answering (monotonic): the start of the downtime.
        self.stopped_at: float | None = None

    def _downtime(self) -> float | None:
        if self.stopped_at is None:
            return None
        return round(time.monotonic() - self.stopped_at, 2)

    def _record(self, step: JournalStep) -> None:
        if self.journal is None:
            return
        entry = {
            "step": str(step),
            "name": self.name,
            "old_id": self.old.id,
            "new_id": self.new_id,
            "was_running": self.was_running,
        }
        try:
            self.journal(entry)
        except Exception:
            # The aside name still lets recovery find the old container.
            logger.exception("could not record %s of %s", step, self.name)

    def run(self) -> RecreateResult:
        try:
            self._replace()
        except _Failure as exc:
            return self._rollback(str(exc))
        except EngineLost as exc:
            return self._rollback(f"lost the engine: {exc}")
        except self.engine.errors as exc:
            return self._rollback(f"engine error: {self.engine.explain(exc)}")
        except Exception as exc:  # anything else still has to be undone
            logger.exception("recreate of %s failed", self.name)
            return self._rollback(f"{type(exc).__name__}: {exc}")
        self._record(JournalStep.HEALTHY)
        downtime = self._downtime()
        try:
            self.engine.remove(self.old.id)
        except (EngineLost, *self.engine.errors) as exc:
            # The new container runs and is healthy; a leftover stopped copy is only clutter.
            logger.warning("could not remove the old container %s: %s", self.old.id[:12], exc)
        self._record(JournalStep.DONE)
        message = f"{self.name} healthy on {self.change.describe()}"
        emit(self.progress, Step.HEALTHY, message)
        return RecreateResult(
            Outcome.HEALTHY, message, container_id=self.new_id, downtime_s=downtime
        )

    def _replace(self) -> None:
        engine = self.engine
        emit(self.progress, Step.STOPPING, f"stopping {self.name}")
        self._record(JournalStep.STOPPING)
        self.stopped_at = time.monotonic()
        engine.stop(self.old)
        self._record(JournalStep.RENAMING)
        engine.rename(self.old.id, aside_name(self.name, self.old.id))
        self.renamed = True

        if self.before_start is not None:
            try:
                self.before_start()
            except Exception as exc:  # its message is the reason to report
                raise _Failure(str(exc) or type(exc).__name__) from exc

        emit(self.progress, Step.RECREATING, f"creating {self.name} on {self.change.describe()}")
        self._record(JournalStep.CREATING)
        self.new_id = engine.create_copy(self.old, name=self.name, change=self.change)
        self._record(JournalStep.CREATED)
        emit(self.progress, Step.STARTING, f"starting {self.name}")
        engine.start(self.new_id)
        emit(
            self.progress,
            Step.WAITING_HEALTH,
            f"waiting up to {self.health_timeout:g}s for {self.name} to become healthy",
        )
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self.new_id is not None
        deadline = time.monotonic() + self.health_timeout
        running_since: float | None = None
        while True:
            seen = self.engine.inspect(self.new_id)
            if seen is None:
                raise _Failure("the new container disappeared")
            if seen.running and seen.health is not None:
                seen = self.engine.check_health(seen)
            now = time.monotonic()
            failure = _failure_of(seen)
            if failure:
                raise _Failure(failure)
            if seen.health == "healthy":
                return
            if seen.health is None and seen.running:
                running_since = running_since if running_since is not None else now
                if now - running_since >= self.health_grace:
                    return
            elif seen.health is None:
                running_since = None
            if now >= deadline:
                raise _Failure(
                    f"the new container did not become healthy within "
                    f"{self.health_timeout:g}s (still {seen.health or seen.status})"
                )
            time.sleep(min(POLL_INTERVAL, max(deadline - now, 0.01)))

    def _log_tail(self) -> str:
        if self.new_id is None:
            return ""
        try:
            return self.engine.logs(self.new_id, LOG_TAIL_LINES).rstrip()
        except (EngineLost, *self.engine.errors):
            return ""

    def _rollback(self, reason: str) -> RecreateResult:
        engine, old_id = self.engine, self.old.id
        self._record(JournalStep.ROLLING_BACK)
        tail = self._log_tail()
        problems: list[str] = []
        undo: list[tuple[str, Callable[[], None]]] = []
        if self.new_id is not None:
            new_id = self.new_id
            undo.append(
                ("could not remove the new container", lambda: engine.remove(new_id, force=True))
            )
        if self.renamed:
            undo.append(
                (
                    "could not rename the old container back",
                    lambda: engine.rename(old_id, self.name),
                )
            )
        if self.was_running:
            undo.append(("could not start the old container again", lambda: engine.start(old_id)))
        for what, step in undo:
            if problems and what.startswith("could not start"):
                break  # never start the old one under a wrong name or beside its copy
            try:
                step()
            except (EngineLost, *engine.errors) as exc:
                problems.append(f"{what}: {engine.explain(exc)}")
        log_part = f"\nLast log lines of the new container:\n{tail}" if tail else ""
        if problems:
            self._record(JournalStep.RESTORE_FAILED)
            message = f"{reason}; restoring {self.name} failed: {'; '.join(problems)}{log_part}"
            emit(self.progress, Step.FAILED, message)
            return RecreateResult(Outcome.FAILED, message, container_id=old_id)
        self._record(JournalStep.ROLLED_BACK)
        message = f"{reason}. The previous {self.name} was restored.{log_part}"
        emit(self.progress, Step.ROLLED_BACK, message)
        return RecreateResult(
            Outcome.ROLLED_BACK, message, container_id=old_id, downtime_s=self._downtime()
        )
