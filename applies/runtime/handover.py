"""Applies room. Make-before-break moves: the new copy of a service goes healthy on its new GPU
before the old one stops, so the service keeps answering through the move.

Sequence (``Handover.run``): create the copy under a temporary name (``new_name``) with
everything the old container has → take it off every network before it starts (a copy that
joins the service's alias before it is healthy gets traffic it cannot answer) → start it and
gate on health as a recreate does → connect it with the service's aliases (both copies answer)
→ disconnect the old one, drain ``GPUCONFIG_DRAIN_S`` seconds, stop and remove it → give the
new copy the service's container name. A copy that never becomes healthy is removed; the old
one was never stopped.

Every step is recorded in the apply journal before it is taken (``mode: zero_downtime``), and
``recover_handover`` finishes or undoes an interrupted move from that record so that exactly
one healthy copy is left: a healthy new copy is kept (connected, renamed, the old one removed),
anything short of that is removed and the old copy is connected and running again. A copy
still carrying the temporary name is repaired from the engine's state alone
(``recover_new_copies``).

Whether a service can move this way at all is read from its container (``move_facts``): it
must be reached by its network alias on a user-defined network (no published host port, no
fixed ``container_name``), and the engine must resolve aliases on that network (Docker user
networks; Podman networks with DNS).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .base import EngineError, JournalStep, Outcome, RecreateResult, Step
from .recreate import (
    Engine,
    EngineLost,
    Recreate,
    Seen,
    _Failure,
    by_name_of,
    emit,
)
from .spec import NEW_MARK, PROJECT_LABEL, REPLICA_LABEL, SERVICE_LABEL

logger = logging.getLogger(__name__)

ZERO_DOWNTIME = "zero_downtime"
RESTART = "restart"
MOVE_MODES = (ZERO_DOWNTIME, RESTART)
DEFAULT_DRAIN_S = 5.0

NEW_NAME = re.compile(r"^(?P<name>.+)" + re.escape(NEW_MARK) + r"(?P<short_id>[0-9a-f]{12})$")


class HandoverStep:
    """Journal steps of a make-before-break move, each written before the step it names."""

    CREATING = "creating"  # the copy is being created under its temporary name
    CREATED = "created"  # it exists (id known), off every network
    HEALTHY = "healthy"  # it is healthy; about to join the service's aliases
    BOTH_UP = "both_up"  # two copies running: the new one joins the aliases
    OLD_STOPPING = "old_stopping"  # the old copy leaves the aliases, drains, stops, goes
    RENAMING = "renaming"  # the old copy is gone; the new one takes the name
    DONE = str(JournalStep.DONE)
    ROLLING_BACK = str(JournalStep.ROLLING_BACK)
    ROLLED_BACK = str(JournalStep.ROLLED_BACK)


# From these steps on, a healthy new copy is the one to keep.
FORWARD = frozenset(
    {
        HandoverStep.HEALTHY,
        HandoverStep.BOTH_UP,
        HandoverStep.OLD_STOPPING,
        HandoverStep.RENAMING,
    }
)


def new_name(name: str, old_id: str) -> str:
    """The name the new copy carries while both copies exist."""
    return f"{name}{NEW_MARK}{old_id[:12]}"


def replaced_name(name: str) -> str | None:
    """The service container name a temporary copy is to take (None: not a temporary name)."""
    match = NEW_NAME.match(name)
    return match["name"] if match else None


def endpoints_of(seen: Seen) -> dict[str, list[str]]:
    """The networks a container is attached to, with its aliases on each (its short id, which
    the engine adds by itself, left out)."""
    mode = ((seen.attrs.get("HostConfig") or {}).get("NetworkMode")) or ""
    if mode in ("none", "host") or mode.startswith("container:"):
        return {}
    networks = (seen.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    short_id = seen.id[:12]
    return {
        name: [a for a in (endpoint or {}).get("Aliases") or [] if a != short_id]
        for name, endpoint in sorted(networks.items())
    }


# -- can the service move this way? --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MoveFacts:
    """What a service's container says about a make-before-break move.

    ``ports``: host ports it publishes (``8098/tcp``); ``fixed_name``: a ``container_name``
    compose did not choose (None: compose's own); ``aliased``: the user-defined networks on
    which it is reached by its service alias; ``unsupported``: why the engine cannot do it
    (empty: it can).
    """

    service: str
    ports: tuple[str, ...] = ()
    fixed_name: str | None = None
    aliased: tuple[str, ...] = ()
    unsupported: str = ""
    network_mode: str = ""

    def blocker(self) -> str:
        """Why this service must restart to move (empty: nothing in its container forbids a
        make-before-break move)."""
        if self.unsupported:
            return self.unsupported
        if self.ports:
            first = self.ports[0].split("/")[0]
            more = f" (and {len(self.ports) - 1} more)" if len(self.ports) > 1 else ""
            return f"publishes host port {first}{more}"
        if self.fixed_name:
            return f"has a fixed container_name ({self.fixed_name})"
        if not self.aliased:
            if self.network_mode in ("none", "host") or self.network_mode.startswith("container:"):
                return f"uses network_mode {self.network_mode}, so it has no network alias"
            return "is not reached by a network alias on a user-defined network"
        return ""


def _published(seen: Seen) -> tuple[str, ...]:
    bindings = (seen.attrs.get("HostConfig") or {}).get("PortBindings") or {}
    ports = []
    for port, binds in sorted(bindings.items()):
        for bind in binds or []:
            if bind.get("HostPort"):
                ports.append(f"{bind['HostPort']}/{port.partition('/')[2] or 'tcp'}")
    return tuple(ports)


def _fixed_name(seen: Seen) -> str | None:
    """The container's name when compose was told it (``container_name``); None when compose
    named it ``<project>-<service>-<n>`` (v2) or ``<project>_<service>_<n>`` (v1)."""
    labels = seen.labels
    service, project = labels.get(SERVICE_LABEL), labels.get(PROJECT_LABEL)
    if not service or not project:
        # Not a compose container: reached by its name, which the copy takes over only at the
        # end, so it counts as a fixed name.
        return seen.name
    number = labels.get(REPLICA_LABEL, "1")
    if seen.name in (f"{project}-{service}-{number}", f"{project}_{service}_{number}"):
        return None
    return seen.name


def facts_of(engine: Engine, seen: Seen, *, service: str) -> MoveFacts:
    """The ``MoveFacts`` of one inspected container."""
    mode = ((seen.attrs.get("HostConfig") or {}).get("NetworkMode")) or ""
    aliased: list[str] = []
    unsupported: list[str] = []
    for network, aliases in endpoints_of(seen).items():
        if service not in aliases:
            continue
        why = engine.network_problem(network)
        if why:
            unsupported.append(why)
        else:
            aliased.append(network)
    return MoveFacts(
        service=service,
        ports=_published(seen),
        fixed_name=_fixed_name(seen),
        aliased=tuple(aliased),
        unsupported="" if aliased or not unsupported else unsupported[0],
        network_mode=mode,
    )


def move_facts(runtime: Any, services: list[str]) -> dict[str, MoveFacts]:
    """The ``MoveFacts`` of each service that has a container, asked of the engine in one
    connection. A runtime that is not an engine's (the simulated one) cannot move without a
    restart; each service says so."""
    if not runtime.runs_two_copies:
        reason = f"the {getattr(runtime, 'label', 'container')} runtime cannot run two copies"
        return {s: MoveFacts(service=s, unsupported=reason) for s in services}
    out: dict[str, MoveFacts] = {}
    with runtime.connect() as engine:
        for service in services:
            try:
                seen = runtime.find(engine, service)
                if seen is not None:
                    out[service] = facts_of(engine, seen, service=service)
            except engine.errors as exc:
                raise EngineError(
                    f"cannot inspect the container of {service}: {engine.explain(exc)}"
                ) from exc
    return out


# -- the move ----------------------------------------------------------------------------------


class Handover(Recreate):
    """One make-before-break move of one container (see the module). Shares the health wait
    and the log tail with ``Recreate``. Until the new copy is healthy a failure is rolled back
    (the copy removed; the old one never stopped); after that the healthy copy is kept and an
    engine failure is left, recorded, for recovery to finish."""

    def __init__(self, *, drain_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.drain_s = drain_s
        self.temp_name = new_name(self.name, self.old.id)
        self.networks = endpoints_of(self.old)
        self.downtime_s = 0.0

    def _record(self, step: Any) -> None:
        if self.journal is None:
            return
        entry = {
            "step": str(step),
            "mode": ZERO_DOWNTIME,
            "name": self.name,
            "temp_name": self.temp_name,
            "old_id": self.old.id,
            "new_id": self.new_id,
            "was_running": self.was_running,
            "networks": self.networks,
        }
        try:
            self.journal(entry)
        except Exception:
            # The temporary name still lets recovery find the copy.
            logger.exception("could not record %s of %s", step, self.name)

    def run(self) -> RecreateResult:
        try:
            self._start_new()
        except _Failure as exc:
            return self._rollback(str(exc))
        except EngineLost as exc:
            return self._rollback(f"lost the engine: {exc}")
        except self.engine.errors as exc:
            return self._rollback(f"engine error: {self.engine.explain(exc)}")
        except Exception as exc:  # anything else still has to be undone
            logger.exception("make-before-break move of %s failed", self.name)
            return self._rollback(f"{type(exc).__name__}: {exc}")
        try:
            self._hand_over()
        except (EngineLost, *self.engine.errors) as exc:
            # The new copy is healthy and (at least partly) serving: recovery finishes the
            # move from the journal rather than undoing a working copy.
            message = (
                f"{self.name}: the new copy is healthy but the handover stopped: "
                f"{self.engine.explain(exc)}; recovery finishes it"
            )
            emit(self.progress, Step.FAILED, message)
            return RecreateResult(Outcome.FAILED, message, container_id=self.new_id)
        self._record(HandoverStep.DONE)
        message = (
            f"{self.name} healthy on {self.change.describe()}; moved without a restart "
            f"(the old copy drained {self.drain_s:g}s)"
        )
        emit(self.progress, Step.HEALTHY, message)
        return RecreateResult(
            Outcome.HEALTHY, message, container_id=self.new_id, downtime_s=self.downtime_s
        )

    def _start_new(self) -> None:
        engine = self.engine
        emit(
            self.progress,
            Step.RECREATING,
            f"starting a second copy of {self.name} on {self.change.describe()} "
            "(off the network until healthy)",
        )
        self._record(HandoverStep.CREATING)
        self.new_id = engine.create_copy(self.old, name=self.temp_name, change=self.change)
        self._record(HandoverStep.CREATED)
        created = engine.inspect(self.new_id)
        for network in endpoints_of(created) if created else {}:
            engine.disconnect(self.new_id, network)
        if self.before_start is not None:
            try:
                self.before_start()
            except Exception as exc:  # its message is the reason to report
                raise _Failure(str(exc) or type(exc).__name__) from exc
        emit(self.progress, Step.STARTING, f"starting {self.temp_name}")
        engine.start(self.new_id)
        emit(
            self.progress,
            Step.WAITING_HEALTH,
            f"waiting up to {self.health_timeout:g}s for the new copy of {self.name} to "
            "become healthy; the old copy keeps answering",
        )
        self._wait_healthy()
        self._record(HandoverStep.HEALTHY)

    def _hand_over(self) -> None:
        engine, new_id = self.engine, self.new_id
        assert new_id is not None
        self._record(HandoverStep.BOTH_UP)
        for network, aliases in self.networks.items():
            engine.connect(new_id, network, aliases)
        emit(
            self.progress,
            Step.STOPPING,
            f"both copies answer; draining the old {self.name} for {self.drain_s:g}s",
        )
        self._record(HandoverStep.OLD_STOPPING)
        for network in self.networks:
            engine.disconnect(self.old.id, network)
        time.sleep(self.drain_s)
        engine.stop(self.old)
        engine.remove(self.old.id, force=True)
        self._record(HandoverStep.RENAMING)
        engine.rename(new_id, self.name)

    def _rollback(self, reason: str) -> RecreateResult:
        self._record(HandoverStep.ROLLING_BACK)
        tail = self._log_tail()
        problems: list[str] = []
        if self.new_id is not None:
            try:
                self.engine.remove(self.new_id, force=True)
            except (EngineLost, *self.engine.errors) as exc:
                problems.append(f"could not remove the new copy: {self.engine.explain(exc)}")
        log_part = f"\nLast log lines of the new copy:\n{tail}" if tail else ""
        if problems:
            message = f"{reason}; {'; '.join(problems)}{log_part}"
            emit(self.progress, Step.FAILED, message)
            return RecreateResult(Outcome.FAILED, message, container_id=self.old.id)
        self._record(HandoverStep.ROLLED_BACK)
        message = f"{reason}. The new copy was removed; {self.name} kept running.{log_part}"
        emit(self.progress, Step.ROLLED_BACK, message)
        return RecreateResult(
            Outcome.ROLLED_BACK, message, container_id=self.old.id, downtime_s=0.0
        )


def handover_run(
    *,
    engine: Engine,
    old: Seen,
    change: Any,
    progress: Callable[[Step, str], None],
    before_start: Callable[[], None] | None,
    health_timeout: float,
    health_grace: float,
    journal: Callable[[dict], None] | None,
    drain_s: float | None = None,
) -> RecreateResult:
    """Move ``old`` make-before-break (see ``Handover``); ``drain_s`` defaults to
    ``GPUCONFIG_DRAIN_S``, read now."""
    if drain_s is None:
        from django.conf import settings

        drain_s = float(getattr(settings, "GPUCONFIG_DRAIN_S", DEFAULT_DRAIN_S))
    return Handover(
        engine=engine,
        old=old,
        change=change,
        progress=progress,
        before_start=before_start,
        health_timeout=health_timeout,
        health_grace=health_grace,
        journal=journal,
        drain_s=drain_s,
    ).run()


# -- recovery ----------------------------------------------------------------------------------


def _usable(seen: Seen | None) -> bool:
    return seen is not None and seen.running and seen.health != "unhealthy"


def _join(engine: Engine, seen: Seen, networks: Mapping[str, list[str]]) -> None:
    """Connect ``seen`` to each of ``networks`` it is not on yet, with its aliases."""
    have = endpoints_of(seen)
    for network, aliases in networks.items():
        if network not in have:
            engine.connect(seen.id, network, list(aliases))


def recover_handover(engine: Engine, entry: dict[str, Any]) -> bool:
    """Finish or undo one interrupted make-before-break move from its record; returns whether
    the old copy was kept (the move undone). Leaves exactly one copy, running, under the
    service's name and on its networks."""
    name: str = entry["name"]
    networks: dict[str, list[str]] = entry.get("networks") or {}
    old = engine.inspect(entry["old_id"])
    new = engine.inspect(entry["new_id"]) if entry.get("new_id") else None
    if new is None and entry.get("temp_name"):
        # Killed between the create and its record: the copy is whatever holds the temp name.
        new = by_name_of(engine, entry["temp_name"])
    keep_new = new is not None and ((entry.get("step") in FORWARD and _usable(new)) or old is None)
    if keep_new:
        assert new is not None
        if old is not None:
            logger.warning("keeping the healthy new copy of %s; removing the old one", name)
            engine.remove(old.id, force=True)
        if not new.running:
            engine.start(new.id)
        _join(engine, engine.inspect(new.id) or new, networks)
        if new.name != name:
            logger.warning("giving %s its name %s", new.name, name)
            engine.rename(new.id, name)
        return False
    if old is None:
        logger.error("neither copy of %s is left; nothing to restore", name)
        return False
    if new is not None:
        logger.warning("removing the unfinished new copy of %s (%s)", name, new.id[:12])
        engine.remove(new.id, force=True)
    if entry.get("was_running", True) and not old.running:
        logger.warning("starting %s again", name)
        engine.start(old.id)
    _join(engine, engine.inspect(old.id) or old, networks)
    if old.name != name:
        engine.rename(old.id, name)
    return True


def recover_new_copies(engine: Engine, labels: list[str]) -> list[str]:
    """Repair, from the engine's state alone, every copy still carrying a temporary name: it is
    removed when the service's container still runs under its name, else it takes the name
    and runs. Returns the services whose old container was kept."""
    kept: list[str] = []
    for listed in engine.list(labels=labels, name=NEW_MARK):
        original = replaced_name(listed.name)
        if original is None:
            continue
        try:
            holder = by_name_of(engine, original)
            if holder is not None:
                logger.warning("removing %s: %s still holds the name", listed.name, original)
                engine.remove(listed.id, force=True)
                if not holder.running:
                    engine.start(holder.id)
                kept.append(listed.labels.get(SERVICE_LABEL) or original)
                continue
            logger.warning("giving %s its name %s", listed.name, original)
            engine.rename(listed.id, original)
            if not listed.running:
                engine.start(listed.id)
        except engine.errors as exc:
            logger.error("could not repair %s: %s", listed.name, exc)
    return kept
