"""The agent's side of an apply: carrying out the centre's plan against this host's own engine.

The centre (``applies.remote``) sends a ``fleet.apply`` task to this host's queue with the plan
of one run: each service's target (GPU device ids, VRAM budget, compose labels) and the
generated files' texts. ``apply_carry_out`` writes the files into ``GPUCONFIG_CONFIG_DIR``,
compares the targets with the local containers (``applies.applying.diff``) and recreates the
changed ones through ``applies.runtime`` (whatever ``GPUCONFIG_CONTAINER_RUNTIME`` and
``DOCKER_HOST`` this agent has): health-gated and rolled back on failure, as on a single box.
Each step and the outcome go to the centre through the broker; nothing here touches a database
or the centre's cache.

The local journal (``ApplyJournal``): one JSON file per run under
``<GPUCONFIG_VAR_DIR>/fleet-applies/``, rewritten atomically with each service's recreate
record before each engine step: the same records ``ApplyRun.journal`` holds on a single box,
read by the same ``ContainerRuntime.recover``. When the agent starts (``worker_init``, before
it connects to the broker or takes work), a run whose file says it was still running is
repaired from it (every service running again: the old container restored, or a healthy new
one kept) and its outcome, ``interrupted``, is kept in the file until the broker takes it
(``outbox_flush``, retried every few seconds): repair never waits for the centre.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from celery import current_app, shared_task
from celery.signals import worker_init, worker_ready, worker_shutdown
from django.conf import settings

from applies.applying import Target, diff, execute
from applies.runtime import get_runtime
from applies.runtime.base import (
    JOURNAL_SETTLED,
    JournalStep,
    Outcome,
    RecreateResult,
    RuntimeUnavailable,
)
from assignments.files.staging import stage_files, write_atomic
from fleet.identity import BrokerIdentity
from fleet.messages import ApplyOutcome, ApplyProgress
from fleet.routing import (
    APPLY_OUTCOME_TASK,
    APPLY_PROGRESS_TASK,
    APPLY_TASK,
    CENTRAL_EXCHANGE,
    CENTRAL_ROUTING_KEY,
)
from gpuconfig_site.periodic import PeriodicThread

logger = logging.getLogger("gpuconfig.fleet")

JOURNAL_FOLDER = "fleet-applies"
OUTBOX_INTERVAL_S = 3.0
# A finished run's file younger than this is left to the process that carried it out (it
# sends its own outcome at once); the outbox sends it only when that send failed.
OUTBOX_GRACE_S = 10.0

RUNNING = "running"
FINISHED = "finished"
REPAIR_PENDING = "repair_pending"


def journal_dir() -> Path:
    return Path(settings.VAR_DIR) / JOURNAL_FOLDER


# --- sending to the centre ------------------------------------------------------------------

_send_lock = threading.Lock()


def central_send(app, task: str, payload: dict, *, retry: bool) -> None:
    """Publish one report to the central exchange, stamped with this agent's broker user."""
    identity = BrokerIdentity.from_url(app.conf.broker_url or "")
    options = {"user_id": identity.own_user} if identity.authenticates else {}
    with _send_lock:
        app.send_task(
            task,
            args=[payload],
            exchange=CENTRAL_EXCHANGE,
            routing_key=CENTRAL_ROUTING_KEY,
            declare=[],
            retry=retry,
            **options,
        )


# --- the local journal ----------------------------------------------------------------------


class ApplyJournal:
    """One run's record on this host's disk: its plan's ids, its state (``running``,
    ``repair_pending``, ``finished``), each service's recreate record, and once it has ended
    the outcome to send. Called as ``journal(service, entry)`` (the runtime's journal
    interface) it stores the entry before returning; every write replaces the file
    atomically."""

    def __init__(self, path: Path, record: dict):
        self.path = path
        self.record = record
        self._lock = threading.Lock()

    @classmethod
    def begin(cls, plan: dict) -> ApplyJournal:
        folder = journal_dir()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        journal = cls(
            folder / f"run-{int(plan['run_id'])}.json",
            {
                "host": plan["host"],
                "run_id": int(plan["run_id"]),
                "operation_id": plan["operation_id"],
                "state": RUNNING,
                "pid": os.getpid(),
                "journal": {},
                "outcome": None,
            },
        )
        journal.save()
        return journal

    @classmethod
    def load(cls, path: Path) -> ApplyJournal | None:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            logger.error("cannot read the apply journal %s: %s", path, exc)
            return None
        return cls(path, record)

    @classmethod
    def all(cls) -> list[ApplyJournal]:
        folder = journal_dir()
        if not folder.is_dir():
            return []
        found = (cls.load(path) for path in sorted(folder.glob("run-*.json")))
        return [journal for journal in found if journal is not None]

    @property
    def state(self) -> str:
        return self.record.get("state", RUNNING)

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.record, sort_keys=True))

    def __call__(self, service: str, entry: dict) -> None:
        with self._lock:
            self.record["journal"][service] = entry
            self.save()

    def unsettled(self) -> dict[str, dict]:
        return {
            service: entry
            for service, entry in (self.record.get("journal") or {}).items()
            if entry.get("step") not in JOURNAL_SETTLED
        }

    def settled(self) -> dict[str, dict]:
        return {
            service: (
                entry
                if entry.get("step") in JOURNAL_SETTLED
                else {**entry, "step": str(JournalStep.RECOVERED)}
            )
            for service, entry in (self.record.get("journal") or {}).items()
        }

    def finish(self, outcome: ApplyOutcome) -> None:
        with self._lock:
            self.record["state"] = FINISHED
            self.record["outcome"] = outcome.as_payload()
            self.save()

    def mark(self, state: str) -> None:
        with self._lock:
            self.record["state"] = state
            self.save()

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


# --- carrying out a plan --------------------------------------------------------------------


class _Reporter:
    """Progress of one run to the centre: each service's step, and a beat while it runs (the
    centre's liveness rule for the run). A report the broker does not take is logged and
    dropped: the apply goes on, and its outcome is sent from the journal."""

    def __init__(self, app, plan: dict):
        self.app = app
        self.ids = {
            "host": plan["host"],
            "run_id": int(plan["run_id"]),
            "operation_id": plan["operation_id"],
        }
        self.log: list[str] = []
        self._beat = PeriodicThread(
            f"gpuconfig-apply-beat-{plan['run_id']}",
            lambda: self.send(),
            lambda: max(float(plan.get("heartbeat_s") or 15.0) / 3, 0.5),
            immediate=True,
        )

    def send(self, service: str = "", step: str = "", message: str = "", **notes) -> None:
        report = ApplyProgress(
            **self.ids, service=service, step=step, message=message, notes=notes or None
        )
        try:
            central_send(self.app, APPLY_PROGRESS_TASK, report.as_payload(), retry=False)
        except Exception as exc:
            logger.warning("could not report %s %s to the centre: %s", service, step, exc)

    def __call__(self, service: str, step, message: str = "") -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {service}: {step} {message}".rstrip())
        self.send(service, str(step), message)

    def __enter__(self):
        self._beat.start()
        return self

    def __exit__(self, *exc):
        self._beat.stop()


def _targets(plan: dict) -> list[Target]:
    return [
        Target(
            service=item["service"],
            device_ids=tuple(str(d) for d in item.get("device_ids") or ()),
            budget_gb=item.get("budget_gb"),
            latency_critical=bool(item.get("latency_critical")),
            keep_budget=bool(item.get("keep_budget")),
            labels=dict(item.get("labels") or {}),
        )
        for item in plan.get("services") or []
    ]


def _files_write(files: dict) -> list[str]:
    """The generated files, written into this host's ``GPUCONFIG_CONFIG_DIR`` at once."""
    folder = Path(settings.GPUCONFIG_CONFIG_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    texts = {folder / Path(name).name: text for name, text in (files or {}).items()}
    stage_files(texts).commit()
    return sorted(path.name for path, text in texts.items() if text is not None)


def _status_of(outcome: dict[str, RecreateResult]) -> tuple[str, str]:
    failed = [s for s, r in outcome.items() if r.outcome != Outcome.HEALTHY]
    if not failed:
        return "succeeded", ""
    status = "partial" if len(failed) < len(outcome) else "failed"
    return status, "; ".join(f"{s}: {outcome[s].outcome} — {outcome[s].message}" for s in failed)


def apply_carry_out(plan: dict, *, app=None) -> ApplyOutcome:
    """Carry out one plan of the centre on this host (see the module); returns the outcome,
    which is also kept in the run's journal file until the centre has it."""
    app = app or current_app
    if plan.get("host") != settings.GPUCONFIG_HOST_NAME:
        raise ValueError(
            f"a plan for host {plan.get('host')!r} reached {settings.GPUCONFIG_HOST_NAME!r}"
        )
    ids = {
        "host": plan["host"],
        "run_id": int(plan["run_id"]),
        "operation_id": plan["operation_id"],
    }
    try:
        journal = ApplyJournal.begin(plan)
    except OSError as exc:  # no journal, no engine step: refused before touching anything
        logger.error("Apply %s refused: cannot write its journal: %s", ids["operation_id"], exc)
        done = ApplyOutcome(**ids, status="failed", error=f"Cannot write the apply journal: {exc}")
        central_send(app, APPLY_OUTCOME_TASK, done.as_payload(), retry=True)
        return done
    results: dict[str, dict] = {}
    with _Reporter(app, plan) as report:
        try:
            written = _files_write(plan.get("files") or {})
            if written:
                report.log.append(f"wrote {', '.join(written)}")
            runtime = get_runtime()
            restored = runtime.recover()
            if restored:
                report.log.append(f"restored containers left aside: {', '.join(restored)}")
            changes = diff(runtime, _targets(plan))
            outcome = execute(
                runtime,
                changes,
                progress=report,
                health_timeout=float(plan.get("health_timeout") or 180.0),
                journal=journal,
            )
            for service, result in outcome.items():
                results[service] = {"outcome": str(result.outcome), "message": result.message}
                if result.downtime_s is not None:
                    results[service]["downtime_s"] = result.downtime_s
            status, error = _status_of(outcome)
        except RuntimeUnavailable as exc:
            for item in plan.get("services") or []:
                report(item["service"], "failed", str(exc))
            status, error = "failed", str(exc)
        except Exception as exc:  # the outcome must reach the centre whatever happened
            logger.exception("Apply %s failed", ids["operation_id"])
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        done = ApplyOutcome(
            **ids,
            status=status,
            error=error,
            results=results,
            log="\n".join(report.log),
            journal=journal.record["journal"],
        )
        journal.finish(done)
    _outcome_send(app, journal)
    return done


def _outcome_send(app, journal: ApplyJournal) -> bool:
    """Send a finished run's outcome; the file goes once the broker has it."""
    try:
        central_send(app, APPLY_OUTCOME_TASK, journal.record["outcome"], retry=False)
    except Exception as exc:
        logger.warning(
            "could not send the outcome of apply %s yet (%s); retried",
            journal.record.get("operation_id"),
            exc,
        )
        return False
    journal.remove()
    return True


@shared_task(name=APPLY_TASK, ignore_result=True, acks_late=False)
def apply_task(plan: dict) -> str:
    """A plan of the centre for this host (only this host's agent reads its queue). Not
    acks_late: an agent killed mid-apply must not replay it; it repairs from its journal."""
    return apply_carry_out(plan).status


# --- repair at start, and the outbox ---------------------------------------------------------


def apply_repair(*, runtime_factory: Callable | None = None) -> list[str]:
    """Repair every run this host's journal says was left running (or whose repair waited for
    the engine): the runtime's recovery finishes or undoes each service's recreate, and the
    run's outcome, ``interrupted``, is kept to send. Called when the agent starts, before it
    takes work, so no apply of its own can be running. Returns the services restored."""
    pending = [j for j in ApplyJournal.all() if j.state in (RUNNING, REPAIR_PENDING)]
    if not pending:
        return []
    try:
        runtime = (runtime_factory or get_runtime)()
        journal: dict[str, dict] = {}
        for run in pending:
            journal.update(run.unsettled())
        restored = runtime.recover(journal)
    except Exception as exc:
        logger.error("Cannot repair interrupted applies yet (retried): %s", exc)
        for run in pending:
            if run.state != REPAIR_PENDING:
                run.mark(REPAIR_PENDING)
        return []
    for run in pending:
        reason = "The agent carrying out this apply stopped; it repaired the containers when it "
        reason += "started again"
        mine = sorted(set(restored) & set(run.record.get("journal") or {}))
        if mine:
            reason += f"; restored the previous container of: {', '.join(mine)}"
        run.record["repaired"] = True
        run.finish(
            ApplyOutcome(
                host=run.record["host"],
                run_id=int(run.record["run_id"]),
                operation_id=run.record["operation_id"],
                status="interrupted",
                error=reason + ".",
                log=f"{time.strftime('%H:%M:%S')} {reason}",
                journal=run.settled(),
            )
        )
        logger.warning("Apply %s interrupted: %s", run.record["operation_id"], reason)
    return restored


def outbox_flush(app, *, grace_s: float = OUTBOX_GRACE_S) -> int:
    """Send the outcomes still kept (their first send failed, or a repair made them); repair
    what waited for the engine. Returns how many were sent."""
    if any(j.state == REPAIR_PENDING for j in ApplyJournal.all()):
        apply_repair()
    sent = 0
    now = time.time()
    for journal in ApplyJournal.all():
        if journal.state != FINISHED:
            continue
        try:
            age = now - journal.path.stat().st_mtime
        except FileNotFoundError:
            continue
        if age >= grace_s or journal.record.get("repaired"):
            sent += _outcome_send(app, journal)
    return sent


# A daemon thread of the agent's main process: ``outbox_flush`` every few seconds.
Outbox = PeriodicThread("gpuconfig-apply-outbox", None, lambda: OUTBOX_INTERVAL_S, immediate=True)


@worker_init.connect
def _repair_on_agent_start(**_kwargs) -> None:
    """Before the agent connects to the broker: repair what a killed apply left behind."""
    if settings.GPUCONFIG_ROLE == "agent":
        try:
            apply_repair()
        except Exception:
            logger.exception("could not repair interrupted applies")


@worker_ready.connect
def _start_outbox(sender=None, **_kwargs) -> None:
    if settings.GPUCONFIG_ROLE == "agent":
        app = getattr(sender, "app", None) or current_app
        Outbox.start(lambda: outbox_flush(app))


@worker_shutdown.connect
def _stop_outbox(**_kwargs) -> None:
    Outbox.stop()
