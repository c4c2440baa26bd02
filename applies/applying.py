"""Applies room. Applying a GPU plan to running containers: what to recreate, and in which order.

Pure orchestration over a ``ContainerRuntime``: no Django models, no settings. The caller (the
apply service) turns saved assignments into ``Target`` objects, calls ``diff`` and then
``execute``, and records the results.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from assignments.planner.types import same_budget

from .runtime.base import (
    ALL_DEVICES,
    ContainerRuntime,
    ContainerState,
    Outcome,
    RecreateResult,
    Step,
)
from .runtime.handover import ZERO_DOWNTIME

logger = logging.getLogger(__name__)

# progress(service, step, message); called from several worker threads at once.
ServiceProgress = Callable[[str, Step, str], None]
# journal(service, entry): the service's recreate record (see ContainerRuntime.recreate); called
# from several worker threads at once.
ServiceJournal = Callable[[str, dict], None]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a service should run: its GPU device ids (empty: no GPU) and VRAM budget in GB.

    ``keep_budget``: no budget is saved for it, so whatever ``VRAM_BUDGET_GB`` the container has
    is kept (never a reason to recreate). ``labels`` are set on a recreated container.
    """

    service: str
    device_ids: tuple[str, ...]
    budget_gb: float | None
    latency_critical: bool = False
    keep_budget: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """A service's running state next to its target.

    ``current`` is None when the service has no container: it is reported, never created (it
    picks up the saved override when compose next brings it up). ``needs_recreate`` is true only
    when its device ids or its ``VRAM_BUDGET_GB`` differ from the target.
    """

    service: str
    current: ContainerState | None
    target: Target
    needs_recreate: bool

    @property
    def missing(self) -> bool:
        return self.current is None


def devices_differ(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether two device requests name different GPUs (order does not matter)."""
    return frozenset(a) != frozenset(b)


def differs(current: ContainerState, target: Target) -> bool:
    """Whether a container must be recreated to match a target (device order does not matter)."""
    if devices_differ(current.device_ids, target.device_ids):
        return True
    return not target.keep_budget and not same_budget(current.budget_gb, target.budget_gb)


def diff(runtime: ContainerRuntime, targets: Iterable[Target]) -> list[Change]:
    """Compare each target with its service's container, in the order given."""
    changes = []
    for target in targets:
        current = runtime.inspect(target.service)
        changes.append(
            Change(
                service=target.service,
                current=current,
                target=target,
                needs_recreate=current is not None and differs(current, target),
            )
        )
    return changes


def _holds(device_ids: Sequence[str], gpu: str) -> bool:
    return ALL_DEVICES in device_ids or gpu in device_ids


def freed_gpus_needed(arriving: Change, leaving: Change) -> list[str]:
    """The GPUs ``arriving`` moves onto that ``leaving`` moves off (empty: no dependency).

    ``all`` is every GPU; a GPU named by neither side is stood for by ``*``.
    """
    if arriving.current is None or leaving.current is None:
        return []
    a_cur, a_tgt = arriving.current.device_ids, arriving.target.device_ids
    l_cur, l_tgt = leaving.current.device_ids, leaving.target.device_ids
    named = {g for ids in (a_cur, a_tgt, l_cur, l_tgt) for g in ids if g != ALL_DEVICES}
    other = "*"
    while other in named:
        other += "*"
    return sorted(
        gpu
        for gpu in (*named, other)
        if _holds(a_tgt, gpu)
        and not _holds(a_cur, gpu)
        and _holds(l_cur, gpu)
        and not _holds(l_tgt, gpu)
    )


def dependencies(changes: Sequence[Change]) -> dict[str, dict[str, list[str]]]:
    """For each service to recreate: the services it must wait for, with the GPUs concerned.

    A service moving onto a GPU waits until every service leaving that GPU has stopped, so the
    VRAM is free before it is claimed. A swap makes each wait for the other; that is safe because
    every service stops its old container before it waits.
    """
    work = [c for c in changes if c.needs_recreate]
    result: dict[str, dict[str, list[str]]] = {}
    for arriving in work:
        result[arriving.service] = {}
        for leaving in work:
            if leaving.service == arriving.service:
                continue
            gpus = freed_gpus_needed(arriving, leaving)
            if gpus:
                result[arriving.service][leaving.service] = gpus
    return result


def _describe(ids: Sequence[str]) -> str:
    return "GPU " + ",".join(ids) if ids else "no GPU"


class DependencyNotFreed(Exception):
    """A service this one waits for did not stop, so the VRAM it needs was not freed."""


def _report_unchanged(changes: Sequence[Change], progress: ServiceProgress) -> None:
    for change in changes:
        if change.needs_recreate:
            continue
        if change.current is None:
            message = f"no container for {change.service}: nothing to recreate"
        else:
            message = f"already on {_describe(change.current.device_ids)}"
        _report(progress, change.service, Step.UNCHANGED, message)


class _StopGate:
    """Who has stopped their old container, so the services waiting on its GPU may start."""

    def __init__(
        self,
        waits: dict[str, dict[str, list[str]]],
        progress: ServiceProgress,
        timeout: float,
    ) -> None:
        self.waits = waits
        self.progress = progress
        self.timeout = timeout
        self.stopped = {service: threading.Event() for service in waits}
        self.stopped_ok = dict.fromkeys(waits, False)
        # Services moved make-before-break: their old copy leaves only once the new one is
        # healthy, so those waiting on them may wait for a whole health timeout more.
        self.handing_over: set[str] = set()

    def release(self, service: str, *, freed: bool | None = None) -> None:
        """Whatever happened to ``service``, those waiting on it must not wait forever;
        ``freed``: whether its old container left its GPU (a make-before-break move says so
        only at its end)."""
        if freed is not None:
            self.stopped_ok[service] = freed
        self.stopped[service].set()

    def before_start(self, service: str) -> None:
        """``service`` has stopped; wait until every service leaving its new GPU has too."""
        self.stopped_ok[service] = True
        self.stopped[service].set()
        self.wait_for_leavers(service)

    def wait_for_leavers(self, service: str) -> None:
        """Wait until every service ``service`` waits for has left its new GPU."""
        slowest = any(other in self.handing_over for other in self.waits[service])
        deadline = time.monotonic() + self.timeout * (2 if slowest else 1)
        for other, gpus in sorted(self.waits[service].items()):
            if not self.stopped[other].is_set():
                message = f"stopped; waiting for {other} to leave {_describe(gpus)}"
                _report(self.progress, service, Step.STOPPING, message)
            if not self.stopped[other].wait(max(deadline - time.monotonic(), 0)):
                raise DependencyNotFreed(
                    f"{other} did not leave {_describe(gpus)} within {self.timeout:g}s"
                )
            if not self.stopped_ok[other]:
                raise DependencyNotFreed(
                    f"{other} could not be stopped, so {_describe(gpus)} was not freed"
                )


def execute(
    runtime: ContainerRuntime,
    changes: Sequence[Change],
    *,
    progress: ServiceProgress,
    health_timeout: float,
    journal: ServiceJournal | None = None,
    modes: Mapping[str, str] | None = None,
) -> dict[str, RecreateResult]:
    """Recreate the services whose change needs it; return their results by service.

    Every recreate runs in its own thread, latency-critical services submitted first. A service
    moving onto a GPU starts its new container only after the services leaving that GPU have
    stopped their old ones (signalled through ``before_start``), so a swap never holds both
    copies in VRAM. A service whose dependency failed to stop, or did not stop within
    ``health_timeout`` seconds, is rolled back instead of starting on a GPU that is still in
    use. Services that need nothing, or have no container, are only reported through
    ``progress`` (``unchanged``) and get no result. ``journal`` receives each recreate's record
    before its engine steps (what recovery needs after a crash).

    ``modes`` maps services to ``zero_downtime`` for a make-before-break move (``moves.py``):
    its old copy runs until the new one is healthy, so it waits only for the services that
    restart off its new GPU (the move mode's VRAM rule counted on those), and those waiting on
    it wait until its old copy is gone.
    """
    _report_unchanged(changes, progress)
    work = sorted(
        (c for c in changes if c.needs_recreate), key=lambda c: not c.target.latency_critical
    )
    if not work:
        return {}
    waits = dependencies(work)
    handing_over = {c.service for c in work if (modes or {}).get(c.service) == ZERO_DOWNTIME}
    for service in handing_over:
        waits[service] = {o: g for o, g in waits[service].items() if o not in handing_over}
    gate = _StopGate(waits, progress, health_timeout)
    gate.handing_over = handing_over

    for change in work:
        waiting_for = waits[change.service]
        current, target = change.current.device_ids, change.target.device_ids
        message = f"queued: {_describe(current)} → {_describe(target)}"
        if waiting_for:
            message += f" (after {', '.join(sorted(waiting_for))} stop)"
        _report(progress, change.service, Step.PENDING, message)

    def recreate(change: Change) -> RecreateResult:
        service, target = change.service, change.target
        budget = change.current.budget_gb if target.keep_budget else target.budget_gb
        extra = {"labels": dict(target.labels)} if target.labels else {}
        handover = service in handing_over
        if handover:
            extra["move_mode"] = ZERO_DOWNTIME
        result = RecreateResult(Outcome.FAILED, "")
        try:
            result = runtime.recreate(
                service,
                device_ids=target.device_ids,
                budget_gb=budget,
                progress=lambda step, message: _report(progress, service, step, message),
                before_start=(
                    (lambda: gate.wait_for_leavers(service))
                    if handover
                    else (lambda: gate.before_start(service))
                ),
                health_timeout=health_timeout,
                **extra,
                journal=(lambda entry: journal(service, entry)) if journal else None,
            )
            return result
        except Exception as exc:  # one service's error must not sink the others
            logger.exception("recreate of %s raised", service)
            message = f"{type(exc).__name__}: {exc}"
            _report(progress, service, Step.FAILED, message)
            return RecreateResult(Outcome.FAILED, message)
        finally:
            gate.release(service, freed=(result.outcome == Outcome.HEALTHY) if handover else None)

    with ThreadPoolExecutor(max_workers=len(work), thread_name_prefix="gpuconfig-apply") as pool:
        futures = {change.service: pool.submit(recreate, change) for change in work}
        finished = {service: future.result() for service, future in futures.items()}
    return {c.service: finished[c.service] for c in changes if c.service in finished}


def _report(progress: ServiceProgress, service: str, step: Step, message: str) -> None:
    try:
        progress(service, step, message)
    except Exception:
        logger.exception("progress callback failed for %s at %s", service, step)
