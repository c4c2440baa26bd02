"""Applies room. Writes that apply the saved configuration to the running containers: starting an
apply (one at a time, a database rule), carrying it out on a worker (with a heartbeat and a
journal of its engine steps), and recovering what an apply whose worker died, or whose engine
went away, left behind."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from applies import progress
from applies.applying import diff, execute
from applies.live import live_refresh
from applies.models import ApplyRun
from applies.moves import MoveDecision, apply_move_modes
from applies.remote import remote_apply_send, remote_pending
from applies.run_reads import runs_state_bump
from applies.runtime import get_runtime
from applies.runtime.base import (
    JOURNAL_SETTLED,
    EngineError,
    JournalStep,
    Outcome,
    RecreateResult,
    RuntimeUnavailable,
    Step,
)
from applies.selectors import apply_targets
from assignments.models import ConfigVersion
from assignments.services.config import actor_name, config_files_write
from gpuconfig_site.errors import ApplicationError
from gpuconfig_site.hosts import host_is_local, host_name, host_scope

logger = logging.getLogger(__name__)

# Held (in the cache) while recovery repairs; an apply waits for it. One apply at a time is the
# database's rule (ApplyRun's ``applyrun_one_active`` constraint), not a lock.
RECOVERY_LOCK_KEY = "apply:recovery"
APPLY_QUEUE_TTL = 300  # seconds a queued apply waits for a worker before recovery closes it


class ApplyBusy(ApplicationError):
    """Another apply is queued or running, or recovery is repairing."""

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


def _recovery_holder() -> str | None:
    return cache.get(RECOVERY_LOCK_KEY)


# --- liveness of a run, and recovery of dead ones ---------------------------------------------


def _start_time(pid: int) -> str:
    """The start time of a live process (clock ticks since boot), or "" when there is none (a
    zombie nobody has reaped yet counts as none)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return ""
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return ""
    return fields[19]


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def worker_identity() -> str:
    """Who carries out a run: host, pid namespace, pid and start time of this process."""
    pid = os.getpid()
    return f"{socket.gethostname()}|{_pid_namespace()}|{pid}|{_start_time(pid)}"


def _worker_gone(worker: str) -> bool:
    """Whether the recorded process is known to be gone: it ran on this host, in this pid
    namespace, and no process with its pid and start time exists any more. A process elsewhere
    is judged by its heartbeat alone."""
    try:
        host, namespace, pid, started = worker.split("|")
    except ValueError:
        return False
    if not started or host != socket.gethostname() or namespace != _pid_namespace():
        return False
    return _start_time(int(pid)) != started


def _heartbeat_timeout() -> float:
    return float(settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT)


def _dead_reason(run: ApplyRun, now) -> str | None:
    """Why an unfinished run is dead, or None while it may still be alive."""
    if run.status == ApplyRun.Status.RUNNING:
        if run.worker and _worker_gone(run.worker):
            return "The worker carrying out this apply stopped"
        beat = run.heartbeat_at or run.started_at or run.created_at
        silent = (now - beat).total_seconds()
        if silent > _heartbeat_timeout():
            return f"The worker carrying out this apply stopped answering ({silent:.0f} s)"
        return None
    queued_for = (now - run.created_at).total_seconds()
    if run.status == ApplyRun.Status.QUEUED and queued_for > APPLY_QUEUE_TTL:
        return "No worker took this apply up"
    return None


def _unsettled(journal: dict) -> dict[str, dict]:
    return {s: e for s, e in (journal or {}).items() if e.get("step") not in JOURNAL_SETTLED}


def _settle_journal(journal: dict, services) -> dict:
    return {
        s: ({**e, "step": str(JournalStep.RECOVERED)} if s in services else e)
        for s, e in (journal or {}).items()
    }


RECOVERY_LOCK_TTL = 120  # seconds recovery holds the apply lock at most
RECOVERY_PREFIX = "recovery-"
# An apply that finds recovery at work (every GPUCONFIG_RECOVERY_INTERVAL, usually a moment's
# look at the containers) waits this long for it before answering busy.
RECOVERY_WAIT_S = 10.0


def apply_recover(*, runtime=None) -> list[str]:
    """Repair what dead or broken applies left behind; returns the services whose previous
    container was put back. Safe to call at any time, from any process.

    A run is dead when its worker is known to be gone (same host) or its heartbeat stopped
    (``GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT``), or, queued, when no worker took it up within
    ``APPLY_QUEUE_TTL``. While a live run exists nothing is touched: its own rollback owns the
    containers. Otherwise the recovery lock is taken (an apply waits for it), the runtime undoes
    what the runs' records (and any container still renamed aside) say was left half done, and
    the dead runs are marked ``interrupted`` with the reason, which frees the active slot. Runs
    that finished with a restore that failed (the engine went away) are repaired the same way
    once the engine answers again.
    """
    if _dead_and_broken() is None:
        return []
    token = f"{RECOVERY_PREFIX}{uuidlib.uuid4()}"
    locked = False
    try:
        locked = cache.add(RECOVERY_LOCK_KEY, token, timeout=RECOVERY_LOCK_TTL)
        if not locked:
            return []  # another recovery is at work
    except Exception as exc:  # the cache is down: the database alone says no apply runs
        logger.warning("Recovering without the recovery lock (cache unavailable: %s)", exc)
    try:
        # Looked at again under the lock: an apply queued meanwhile is alive, and owns the slot.
        found = _dead_and_broken()
        if found is None:
            return []
        dead, broken = found
        if runtime is None and not host_is_local():
            # Another host's containers are its agent's to repair, from the agent's own
            # journal when it starts again (fleet.applying); here the dead runs only close.
            _close_dead(dead, restored=[], settled=False, problem="", note=REMOTE_REPAIR_NOTE)
            return []
        try:
            return _recover(runtime or get_runtime(), dead, broken)
        except (RuntimeUnavailable, EngineError) as exc:
            if dead or broken:
                _log_unrepairable(exc)
            else:  # nothing was interrupted: no engine is nothing to repair
                logger.debug("No engine to look for containers left aside: %s", exc)
            _close_dead(dead, restored=[], settled=False, problem=str(exc))
            return []
    finally:
        if locked:
            try:
                if cache.get(RECOVERY_LOCK_KEY) == token:
                    cache.delete(RECOVERY_LOCK_KEY)
            except Exception:
                logger.warning("could not release the recovery lock; it expires by itself")


def apply_repair_pending() -> bool:
    """Whether recovery has something to do: an unfinished run that is dead, or a finished one
    whose record is unsettled (its restore failed while the engine was away). Database only."""
    found = _dead_and_broken()
    return bool(found and (found[0] or found[1]))


_last_problem: tuple[str, float] = ("", 0.0)
PROBLEM_REPEAT_S = 300.0  # the same unrepairable state is logged as an error this seldom


def _log_unrepairable(exc: Exception) -> None:
    """An error the first time (and every ``PROBLEM_REPEAT_S``), a debug line in between: the
    worker retries every couple of seconds while the engine is away."""
    global _last_problem
    text, now = str(exc), time.monotonic()
    if text != _last_problem[0] or now - _last_problem[1] >= PROBLEM_REPEAT_S:
        _last_problem = (text, now)
        logger.error("Cannot repair interrupted applies yet: %s", exc)
    else:
        logger.debug("Cannot repair interrupted applies yet: %s", exc)


def _dead_and_broken() -> tuple[list[tuple[ApplyRun, str]], list[ApplyRun]] | None:
    """The unfinished runs that are dead (with why) and the finished ones left unsettled; None
    while a live run exists (its own rollback owns the containers)."""
    now = timezone.now()
    active = list(
        ApplyRun.objects.filter(status__in=[ApplyRun.Status.RUNNING, ApplyRun.Status.QUEUED])
    )
    dead = [(run, reason) for run in active if (reason := _dead_reason(run, now))]
    if len(dead) < len(active):
        return None
    broken = [
        run
        for run in ApplyRun.objects.filter(status__in=ApplyRun.FINISHED).order_by("-created_at")[:5]
        if _unsettled(run.journal)
    ]
    return dead, broken


def _recover(runtime, dead: list[tuple[ApplyRun, str]], broken: list[ApplyRun]) -> list[str]:
    runs = sorted([run for run, _ in dead] + broken, key=lambda r: (r.created_at, r.pk))
    journal: dict[str, dict] = {}
    for run in runs:
        journal.update(_unsettled(run.journal))
    restored = runtime.recover(journal)
    for run in broken:
        note = "Recovery repaired what this apply left behind"
        if restored:
            note += f"; restored the previous container of: {', '.join(restored)}"
        if run.repaired(f"{note}.", journal=_settle_journal(run.journal, journal)):
            logger.warning("Apply %s repaired: %s", run.operation_id, note)
    _close_dead(dead, restored=restored, settled=True)
    return restored


REMOTE_REPAIR_NOTE = "; its agent repairs the containers from its own journal when it starts"


def _close_dead(
    dead, *, restored: list[str], settled: bool, problem: str = "", note: str = ""
) -> None:
    for run, reason in dead:
        reason += note
        if restored:
            reason += f"; restored the previous container of: {', '.join(restored)}"
        if problem:
            reason += f"; the containers could not be repaired yet ({problem}), recovery retries"
        journal = _settle_journal(run.journal, run.journal) if settled else run.journal
        if not run.interrupt(reason + ".", journal=journal):
            continue  # it ended meanwhile: its own outcome stands
        try:
            for entry in progress.progress_get(str(run.operation_id)):
                if entry["status"] not in progress.TERMINAL:
                    progress.progress_update(
                        str(run.operation_id), entry["service"], Step.INTERRUPTED, reason
                    )
        except Exception:
            logger.warning("could not mark the progress of %s interrupted", run.operation_id)
        logger.warning("Apply %s interrupted: %s", run.operation_id, reason)


def _busy(active: ApplyRun | None = None) -> ApplyBusy:
    active = active or ApplyRun.objects.filter(status__in=ApplyRun.ACTIVE).first()
    holder = active.operation_id if active else "unknown"
    return ApplyBusy(f"An apply is already running (operation {holder}).")


def recovery_wait(*, limit: float = RECOVERY_WAIT_S) -> bool:
    """Wait (at most ``limit`` s) while recovery repairs; returns whether it is over. Recovery
    is over in a moment, and the user who pressed Apply should not be told to come back for
    it. A cache that does not answer raises (an apply needs Redis, its broker, anyway)."""
    deadline = time.monotonic() + limit
    while True:
        if not _recovery_holder():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


@dataclass(frozen=True)
class ApplyPreview:
    """What Apply would do now: each service whose container differs from the saved
    configuration (``changes``), how each would move (``modes``), and the engine asked; or why
    the engine could not be asked (``error``)."""

    changes: list = field(default_factory=list)
    modes: dict[str, MoveDecision] = field(default_factory=dict)
    runtime_label: str = ""
    runtime_where: str = ""
    error: str = ""
    # Another host's apply: its agent compares and recreates; these are what it is sent.
    agent_host: str = ""
    targets: list = field(default_factory=list)


def apply_preview() -> ApplyPreview:
    """Compare the saved configuration with the running containers (asks the engine; writes
    nothing). An engine that cannot be asked is said in ``error``, not raised. For another
    host, whose containers only its agent sees, the targets it would be sent."""
    if not host_is_local():
        return ApplyPreview(agent_host=host_name(), targets=apply_targets())
    try:
        runtime = get_runtime()
        changes = diff(runtime, apply_targets())
        modes = apply_move_modes(runtime, changes)
    except RuntimeUnavailable as exc:
        return ApplyPreview(error=f"Cannot reach the container engine: {exc}")
    except EngineError as exc:
        return ApplyPreview(error=f"The container engine refused a request: {exc}")
    return ApplyPreview(
        changes=changes, modes=modes, runtime_label=runtime.label, runtime_where=runtime.where
    )


def apply_start(*, user=None, actor: str = "") -> tuple[ApplyRun, list[str]]:
    """Work out which services will restart and create the ApplyRun (the database refuses a
    second queued or running one); the caller hands it to a worker
    (``applies.tasks.apply_config_enqueue``).

    Raises ApplyBusy while another apply is queued or running (or recovery outlasts
    ``RECOVERY_WAIT_S``), and an ApplicationError (``engine_unavailable``
    or ``engine_refused``) when the container engine cannot be asked; that attempt is recorded
    as a failed run.
    """
    actor = actor or actor_name(user)
    requested_by = user if getattr(user, "pk", None) else None
    operation_id = uuidlib.uuid4()
    # A dead run must not refuse the apply: recovery closes it (and repairs) first.
    apply_recover()
    if not recovery_wait():
        raise ApplyBusy(
            "gpuconfig is repairing what an interrupted apply left behind; try again in a minute."
        )
    active = ApplyRun.objects.filter(status__in=ApplyRun.ACTIVE).first()
    if active is not None:
        raise _busy(active)
    try:
        if host_is_local():
            changes = diff(get_runtime(), apply_targets())
            pending = [c.service for c in changes if c.needs_recreate]
        else:  # its agent sees the containers (applies.remote)
            pending = remote_pending()
    except (RuntimeUnavailable, EngineError) as exc:
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
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: the refusal leaves the outer one usable
                run = ApplyRun.objects.create(
                    operation_id=operation_id,
                    requested_by=requested_by,
                    actor=actor,
                    config_version=ConfigVersion.objects.order_by("-created_at", "-pk").first(),
                    services=pending,
                )
        except IntegrityError:
            raise _busy() from None  # another apply was queued meanwhile
        progress.progress_init(str(operation_id), pending)
    return run, pending


class _RunKeeper:
    """While an apply runs: refreshes the run's heartbeat (recovery judges the run dead, and the
    status says the worker stopped, once it stops)."""

    def __init__(self, run: ApplyRun):
        self.run = run
        self.token = str(run.operation_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apply-keeper", daemon=True)

    def __enter__(self):
        self.interval = _heartbeat_timeout() / 5
        self._thread.start()
        return self

    def _run(self):
        try:
            while not self._stop.wait(self.interval):
                try:
                    ApplyRun.objects.filter(pk=self.run.pk).update(heartbeat_at=timezone.now())
                    runs_state_bump()  # the status reads tell a stalled run by its heartbeat
                except Exception:
                    logger.warning("could not refresh the heartbeat of %s", self.token)
        finally:
            connection.close()

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


class _RunJournal:
    """Stores each service's recreate record on the run before the engine step it names."""

    def __init__(self, run: ApplyRun):
        self.run_pk = run.pk
        self.entries: dict[str, dict] = {}
        self._lock = threading.Lock()

    def __call__(self, service: str, entry: dict) -> None:
        with self._lock:
            self.entries[service] = entry
            try:
                ApplyRun.objects.filter(pk=self.run_pk).update(journal=dict(self.entries))
                runs_state_bump()
            finally:
                if threading.current_thread() is not threading.main_thread():
                    connection.close()


def _run_claim(run_id: int) -> ApplyRun | None:
    """Move a queued run to running; None when it is not queued (run twice, or closed by
    recovery). A recovery at work (it started before this run was queued) is waited out."""
    run = ApplyRun.objects.get(pk=run_id)
    if run.status != ApplyRun.Status.QUEUED:
        return None
    try:
        recovery_wait(limit=RECOVERY_LOCK_TTL)
    except Exception:  # the cache is away: the database's rule still holds one apply at a time
        logger.warning("could not ask whether recovery is at work; going on")
    return run if run.claim(worker=worker_identity()) else None


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
        # --- move modes (applies/moves.py): make-before-break or stop-start per service
        try:
            modes = apply_move_modes(runtime, changes, note=self.note)
        except Exception:  # deciding must never stop an apply: every service then restarts
            logger.exception("could not decide the move modes; every service restarts")
            modes = {}
        outcome = execute(
            runtime,
            changes,
            progress=self.report,
            health_timeout=settings.GPUCONFIG_HEALTH_TIMEOUT,
            journal=_RunJournal(self.run),
            modes={s: d.mode for s, d in modes.items()},
        )
        for service, result in outcome.items():
            self.results[service] = {"outcome": str(result.outcome), "message": result.message}
            if service in modes:
                self.results[service].update(
                    move_mode=modes[service].mode, downtime_s=result.downtime_s
                )
                self.note(service, downtime_s=result.downtime_s)
        # --- end of move modes
        return _outcome_status(outcome)

    def note(self, service: str, **fields) -> None:
        try:
            progress.progress_note(self.op, service, **fields)
        except Exception:  # the apply goes on without the page's extra detail
            logger.warning("could not note %s on the progress of %s", sorted(fields), service)

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

    Safe to run twice: a run that is no longer queued returns at once. It works on the run's
    host, whatever host the caller was on.
    """
    host = ApplyRun.all_hosts.filter(pk=run_id).values_list("host", flat=True).first()
    with host_scope(host):
        if not host_is_local():  # carried out by the host's own agent (applies.remote)
            return remote_apply_send(run_id=run_id)
        return _config_apply(run_id)


def _config_apply(run_id: int) -> ApplyRun:
    run = _run_claim(run_id)
    if run is None:
        return ApplyRun.objects.get(pk=run_id)
    work = _Apply(run)
    with _RunKeeper(run):
        status, error = work()
        if not run.finish(status, error=error, results=work.results, log="\n".join(work.log)):
            logger.warning(
                "Apply %s ended %s, but it was already %s; that stands", work.op, status, run.status
            )
    _live_refresh_quietly()
    run.refresh_from_db()
    return run


def _live_refresh_quietly() -> None:
    """Keep the page's copy of the containers' state current while an apply runs."""

    try:
        live_refresh()
    except Exception:  # the apply's outcome matters more than the page's copy
        logger.exception("could not refresh the live container state")
