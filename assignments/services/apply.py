"""Writes that apply the saved configuration to the running containers: the apply lock, starting
an apply, carrying it out on a worker, and recovering from a worker that died mid-apply."""

from __future__ import annotations

import logging
import threading
import uuid as uuidlib

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from assignments import progress
from assignments.applying import diff, execute
from assignments.models import ApplyRun, ConfigVersion
from assignments.runtime import get_runtime
from assignments.runtime.base import (
    EngineError,
    Outcome,
    RecreateResult,
    RuntimeUnavailable,
    Step,
)
from assignments.selectors import apply_targets
from assignments.services.config import actor_name, config_files_write
from gpuconfig_site.errors import ApplicationError

logger = logging.getLogger(__name__)

APPLY_LOCK_KEY = "apply:lock"
APPLY_QUEUE_TTL = 300  # seconds a queued apply holds the lock waiting for a worker


class ApplyBusy(ApplicationError):
    """Another apply holds the lock."""

    code = "apply_busy"


def _engine_error(exc: Exception) -> ApplicationError:
    """A container engine failure as the user sees it (nothing was restarted)."""
    if isinstance(exc, RuntimeUnavailable):
        return ApplicationError(
            f"Cannot reach the container engine, so nothing was restarted: {exc}",
            code="engine_unavailable",
        )
    return ApplicationError(
        f"The container engine refused a request, so nothing was restarted: {exc}",
        code="engine_refused",
    )


def _lock_holder() -> str | None:
    return cache.get(APPLY_LOCK_KEY)


def _run_fail_interrupted(run: ApplyRun, reason: str) -> None:
    """Mark a run the worker left running as failed, with its unfinished services."""
    with transaction.atomic():
        run = ApplyRun.objects.select_for_update().get(pk=run.pk)
        if run.status != ApplyRun.Status.RUNNING:
            return
        run.status = ApplyRun.Status.FAILED
        run.error = reason + "."
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "finished_at"])
    op = str(run.operation_id)
    entries = {p["service"]: p for p in progress.progress_get(op)}
    for service in run.services:
        entry = entries.get(service)
        if entry and entry["status"] not in progress.TERMINAL:
            progress.progress_update(op, service, Step.FAILED, reason)
    logger.warning("Apply %s marked failed: %s", run.operation_id, reason)


def apply_recover_stale(*, runtime=None) -> list[str]:
    """After a worker died mid-apply: once its lock has expired, restore any container left
    renamed aside and mark the interrupted runs failed. Safe to call at any time."""
    if _lock_holder() is not None:
        return []
    stale = list(ApplyRun.objects.filter(status__in=[ApplyRun.Status.RUNNING]))
    if not stale:
        return []
    try:
        restored = (runtime or get_runtime()).recover()
    except RuntimeUnavailable as exc:
        logger.error("Cannot recover interrupted apply: %s", exc)
        return []
    reason = "The worker stopped during this apply"
    if restored:
        reason += f"; restored the previous container of: {', '.join(restored)}"
    for run in stale:
        _run_fail_interrupted(run, reason)
    return restored


def apply_start(*, user=None, actor: str = "") -> tuple[ApplyRun, list[str]]:
    """Take the apply lock, work out which services will restart, create the ApplyRun and
    enqueue the work after commit.

    Raises ApplyBusy while another apply runs, and an ApplicationError (``engine_unavailable``
    or ``engine_refused``) when the container engine cannot be asked; that attempt is recorded
    as a failed run.
    """
    from assignments.tasks import apply_config_task  # the tasks module imports this one

    actor = actor or actor_name(user)
    requested_by = user if getattr(user, "pk", None) else None
    operation_id = uuidlib.uuid4()
    if not cache.add(APPLY_LOCK_KEY, str(operation_id), timeout=APPLY_QUEUE_TTL):
        raise ApplyBusy(f"An apply is already running (operation {_lock_holder()}).")
    try:
        apply_recover_stale()
        changes = diff(get_runtime(), apply_targets())
        pending = [c.service for c in changes if c.needs_recreate]
    except (RuntimeUnavailable, EngineError) as exc:
        cache.delete(APPLY_LOCK_KEY)
        error = _engine_error(exc)
        ApplyRun.objects.create(
            operation_id=operation_id,
            status=ApplyRun.Status.FAILED,
            requested_by=requested_by,
            actor=actor,
            error=str(exc),
            finished_at=timezone.now(),
        )
        raise error from exc
    except BaseException:
        cache.delete(APPLY_LOCK_KEY)
        raise
    with transaction.atomic():
        run = ApplyRun.objects.create(
            operation_id=operation_id,
            requested_by=requested_by,
            actor=actor,
            config_version=ConfigVersion.objects.order_by("-created_at", "-pk").first(),
            services=pending,
        )
        progress.progress_init(str(operation_id), pending)
        apply_config_task.delay_on_commit(run.pk)
    return run, pending


class _LockKeeper:
    """Refreshes the apply lock while the apply runs; it expires soon after a crash."""

    def __init__(self, token: str):
        self.token = token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apply-lock", daemon=True)

    def __enter__(self):
        self.ttl = settings.GPUCONFIG_APPLY_LOCK_TTL
        cache.set(APPLY_LOCK_KEY, self.token, self.ttl)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.ttl / 3):
            cache.set(APPLY_LOCK_KEY, self.token, self.ttl)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        if cache.get(APPLY_LOCK_KEY) == self.token:
            cache.delete(APPLY_LOCK_KEY)


def _run_claim(run_id: int) -> ApplyRun | None:
    """Move a queued run to running; None when it is not queued (run twice) or another apply
    holds the lock (the run is then failed)."""
    with transaction.atomic():
        run = ApplyRun.objects.select_for_update().get(pk=run_id)
        if run.status != ApplyRun.Status.QUEUED:
            return None
        holder = _lock_holder()
        if holder not in (None, str(run.operation_id)):
            run.status = ApplyRun.Status.FAILED
            run.error = f"Another apply ({holder}) was running."
            run.finished_at = timezone.now()
            run.save()
            return None
        run.status = ApplyRun.Status.RUNNING
        run.started_at = timezone.now()
        run.save(update_fields=["status", "started_at"])
    return run


def _outcome_status(outcome: dict[str, RecreateResult]) -> tuple[str, str]:
    """The run's status and error from the per-service results."""
    failed = [s for s, r in outcome.items() if r.outcome != Outcome.HEALTHY]
    if not failed:
        return ApplyRun.Status.SUCCEEDED, ""
    status = ApplyRun.Status.PARTIAL if len(failed) < len(outcome) else ApplyRun.Status.FAILED
    error = "; ".join(f"{s}: {outcome[s].outcome} — {outcome[s].message}" for s in failed)
    return status, error


class _Apply:
    """One claimed run being carried out: its progress reports, log and results."""

    def __init__(self, run: ApplyRun):
        self.run = run
        self.op = str(run.operation_id)
        self.log: list[str] = []
        self.results: dict[str, dict] = {}

    def report(self, service: str, step, message: str = "") -> None:
        progress.progress_update(self.op, service, str(step), message)
        self.log.append(f"{timezone.now():%H:%M:%S} {service}: {step} {message}".rstrip())
        if str(step) in progress.TERMINAL or str(step) == Step.STARTING:
            _live_refresh_quietly()

    def carry_out(self) -> tuple[str, str]:
        config_files_write()
        runtime = get_runtime()
        restored = runtime.recover()
        if restored:
            self.log.append(
                f"Restored containers left aside by an earlier apply: {', '.join(restored)}"
            )
        changes = [c for c in diff(runtime, apply_targets()) if c.needs_recreate]
        for gone in sorted(set(self.run.services) - {c.service for c in changes}):
            self.report(gone, Step.UNCHANGED, "Already running with this assignment")
        outcome = execute(
            runtime, changes, progress=self.report, health_timeout=settings.GPUCONFIG_HEALTH_TIMEOUT
        )
        for service, result in outcome.items():
            self.results[service] = {"outcome": str(result.outcome), "message": result.message}
        return _outcome_status(outcome)

    def __call__(self) -> tuple[str, str]:
        try:
            return self.carry_out()
        except RuntimeUnavailable as exc:
            for service in self.run.services:
                self.report(service, Step.FAILED, str(exc))
            return ApplyRun.Status.FAILED, str(exc)
        except Exception as exc:  # recorded on the run; the worker must not lose the outcome
            logger.exception("Apply %s failed", self.op)
            return ApplyRun.Status.FAILED, f"{type(exc).__name__}: {exc}"


def config_apply(*, run_id: int) -> ApplyRun:
    """Carry out one ApplyRun: regenerate the override file, recreate the changed containers
    (health-gated, rolled back on failure) with live progress, and record the outcome.

    Safe to run twice: a run that is no longer queued returns at once.
    """
    run = _run_claim(run_id)
    if run is None:
        return ApplyRun.objects.get(pk=run_id)
    work = _Apply(run)
    with _LockKeeper(work.op):
        status, error = work()
        ApplyRun.objects.filter(pk=run.pk).update(
            status=status,
            error=error,
            results=work.results,
            log="\n".join(work.log),
            finished_at=timezone.now(),
        )
    _live_refresh_quietly()
    run.refresh_from_db()
    return run


def _live_refresh_quietly() -> None:
    """Keep the page's copy of the containers' state current while an apply runs."""
    from assignments.live import live_refresh

    try:
        live_refresh()
    except Exception:  # the apply's outcome matters more than the page's copy
        logger.exception("could not refresh the live container state")
