"""Applies room. The runtime over a container engine (Docker, Podman): finding a service's
container, the stop-and-recreate sequence (``recreate``) or the make-before-break move
(``handover``), and recovery from an apply's journal. Subclasses only connect.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping

from .base import (
    JOURNAL_SETTLED,
    ContainerListing,
    ContainerRuntime,
    ContainerState,
    EngineError,
    Journal,
    Outcome,
    Progress,
    RecreateResult,
    Step,
)
from .handover import ZERO_DOWNTIME, handover_run, recover_handover, recover_new_copies
from .recreate import (
    Engine,
    Recreate,
    Seen,
    by_name_of,
    emit,
    recover_one,
    recover_recorded,
)
from .spec import (
    ASIDE_MARK,
    NEW_MARK,
    PROJECT_LABEL,
    SERVICE_LABEL,
    Replacement,
    original_name,
    replica_number,
)

logger = logging.getLogger(__name__)


class EngineRuntime(ContainerRuntime):
    """A ``ContainerRuntime`` over an ``Engine``: subclasses only connect. ``base_url`` is the
    engine's socket when the caller knows it (``auto`` does); else each engine looks where its
    tools look."""

    runs_two_copies = True

    def __init__(
        self,
        *,
        project: str | None = None,
        health_timeout: float = 180.0,
        health_grace: float = 3.0,
        base_url: str | None = None,
    ) -> None:
        super().__init__(project=project, health_timeout=health_timeout, health_grace=health_grace)
        self.base_url = base_url

    @contextlib.contextmanager
    def connect(self) -> Iterator[Engine]:  # pragma: no cover - contract
        """Yield an engine connection; ``RuntimeUnavailable`` when the engine cannot be reached
        (also for ``EngineLost`` raised inside)."""
        raise NotImplementedError
        yield

    # -- finding containers --------------------------------------------------------------------

    def _labels(self, *labels: str) -> list[str]:
        return [*labels, *([f"{PROJECT_LABEL}={self.project}"] if self.project else [])]

    def find(self, engine: Engine, service: str) -> Seen | None:
        """The service's container: the one labelled with the service (first replica, running
        first), else the one named after it; never one set aside."""
        listed = [
            c
            for c in engine.list(labels=self._labels(f"{SERVICE_LABEL}={service}"))
            # Neither an old container set aside nor a make-before-break copy being started.
            if original_name(c.name) is None and NEW_MARK not in c.name
        ]
        if listed:
            listed.sort(key=lambda c: (not c.running, replica_number(c.labels), c.name))
            return engine.inspect(listed[0].id)
        by_name = by_name_of(engine, service)
        if by_name is None:
            return None
        project = by_name.labels.get(PROJECT_LABEL)
        if self.project and project and project != self.project:
            return None
        return by_name

    # -- the contract --------------------------------------------------------------------------

    def containers(self) -> list[ContainerListing]:
        with self.connect() as engine:
            try:
                listed = engine.list()
            except engine.errors as exc:
                raise EngineError(f"cannot list the containers: {engine.explain(exc)}") from exc
        return [ContainerListing(c.id, c.name.lstrip("/"), dict(c.labels)) for c in listed]

    def inspect(self, service: str) -> ContainerState | None:
        with self.connect() as engine:
            try:
                seen = self.find(engine, service)
            except engine.errors as exc:
                raise EngineError(
                    f"cannot inspect the container of {service}: {engine.explain(exc)}"
                ) from exc
            return seen.state if seen else None

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
        move_mode: str | None = None,
    ) -> RecreateResult:
        """``move_mode="zero_downtime"`` moves the service make-before-break
        (``handover.py``); anything else stops and recreates it."""
        with self.connect() as engine:
            try:
                old = self.find(engine, service)
            except engine.errors as exc:
                message = f"cannot look up the container of {service}: {engine.explain(exc)}"
                emit(progress, Step.FAILED, message)
                return RecreateResult(Outcome.FAILED, message)
            if old is None:
                message = f"no container found for service {service}"
                emit(progress, Step.FAILED, message)
                return RecreateResult(Outcome.FAILED, message)
            if move_mode == "zero_downtime":  # handover.ZERO_DOWNTIME
                return handover_run(
                    engine=engine,
                    old=old,
                    change=Replacement(tuple(device_ids), budget_gb, dict(labels or {})),
                    progress=progress,
                    before_start=before_start,
                    health_timeout=self.health_timeout
                    if health_timeout is None
                    else health_timeout,
                    health_grace=self.health_grace,
                    journal=journal,
                )
            return Recreate(
                engine=engine,
                old=old,
                change=Replacement(tuple(device_ids), budget_gb, dict(labels or {})),
                progress=progress,
                before_start=before_start,
                health_timeout=self.health_timeout if health_timeout is None else health_timeout,
                health_grace=self.health_grace,
                journal=journal,
            ).run()

    def recover(self, journal: dict[str, dict] | None = None) -> list[str]:
        restored: list[str] = []
        with self.connect() as engine:
            for service, entry in sorted((journal or {}).items()):
                if entry.get("step") in JOURNAL_SETTLED or not entry.get("old_id"):
                    continue
                repair = (
                    recover_handover if entry.get("mode") == ZERO_DOWNTIME else recover_recorded
                )
                try:
                    if repair(engine, entry):
                        restored.append(service)
                except engine.errors as exc:
                    logger.error("could not recover %s from its record: %s", service, exc)
            for listed in engine.list(labels=self._labels(), name=ASIDE_MARK):
                original = original_name(listed.name)
                if original is None:
                    continue
                try:
                    if recover_one(engine, listed, original):
                        restored.append(listed.labels.get(SERVICE_LABEL) or original)
                except engine.errors as exc:
                    logger.error("could not recover %s as %s: %s", listed.name, original, exc)
            restored += recover_new_copies(engine, self._labels())
        return sorted(set(restored))
