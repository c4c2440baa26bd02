"""Applies room. An apply on a fleet host other than this machine: the centre touches no engine.

The central worker carries out such a run (``applies.services.config_apply`` hands it here) by
building the plan from the saved configuration of the run's host (``remote_plan``: each
service's GPU device ids, VRAM budget and compose labels, and the generated files' texts) and
sending it, as a ``fleet.apply`` task, to that host's queue (``fleet.routing``). The host's
agent recreates the containers against its own engine (``fleet.applying``) and reports back
through the central queue; ``remote_progress_receive`` and ``remote_outcome_receive`` take
those reports in, after checking the sender: only the broker user of the run's own host may
speak for the run, and a message naming another host's run is refused and logged.

While the agent works, its progress messages (a beat at least every
``GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT`` / 3 s) refresh the run's heartbeat, so the centre's
liveness rule (``applies.services``) holds for remote runs as for local ones.
"""

from __future__ import annotations

import logging
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.utils import timezone

from applies import progress
from applies.models import ApplyRun
from applies.run_reads import runs_state_bump
from applies.runtime.base import Step
from applies.selectors import apply_targets
from assignments.files import generated
from assignments.models import ConfigVersion, GpuConfig
from assignments.selectors import config_entries, config_issues, planning_input
from fleet.identity import SenderRefused
from fleet.messages import ApplyOutcome, ApplyProgress, MessageInvalid
from fleet.routing import APPLY_TASK, HOSTS_EXCHANGE
from fleet.services import sender_host
from gpuconfig_site.hosts import host_name, host_scope

logger = logging.getLogger("gpuconfig.fleet")

AGENT_WORKER_PREFIX = "agent:"


def remote_pending() -> list[str]:
    """The services an apply on the host at hand may restart: every enabled one (only its
    agent can see which containers differ; it reports the others ``unchanged``)."""
    return [target.service for target in apply_targets()]


def remote_plan(run: ApplyRun) -> dict:
    """What the host's agent needs to carry out ``run`` (JSON): per service its target (GPU
    device ids, VRAM budget or ``keep_budget``, latency class, compose labels of the written
    files) and the generated files' texts (by file name; None: the file is to be removed)."""
    data = planning_input()
    version = ConfigVersion.objects.order_by("-created_at", "-pk").first()
    texts = generated.render_config_files(
        config_entries(data),
        strategy=GpuConfig.load().strategy,
        warnings=[issue.message for issue in config_issues(data)],
        generated_at=version.created_at if version else timezone.now(),
    )
    return {
        "host": run.host,
        "run_id": run.pk,
        "operation_id": str(run.operation_id),
        "heartbeat_s": float(settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT),
        "health_timeout": float(settings.GPUCONFIG_HEALTH_TIMEOUT),
        "services": [
            {
                "service": target.service,
                "device_ids": list(target.device_ids),
                "budget_gb": target.budget_gb,
                "keep_budget": target.keep_budget,
                "latency_critical": target.latency_critical,
                "labels": dict(target.labels),
            }
            for target in apply_targets(data)
        ],
        "files": {Path(path).name: text for path, text in texts.items()},
    }


def remote_apply_send(*, run_id: int) -> ApplyRun:
    """Claim the queued run of the host at hand for its agent and send it the plan; a run no
    longer queued returns at once (a task delivered twice). A plan that cannot be sent ends
    the run ``failed`` with why: nothing was touched on the host."""
    run = ApplyRun.objects.get(pk=run_id)
    if run.status != ApplyRun.Status.QUEUED:
        return run
    try:
        plan = remote_plan(run)
    except Exception as exc:
        logger.exception("Apply %s: cannot build the plan for %s", run.operation_id, run.host)
        run.finish(ApplyRun.Status.FAILED, error=f"Cannot build the plan: {exc}")
        return run
    if not run.claim(worker=f"{AGENT_WORKER_PREFIX}{run.host}"):
        return run
    try:
        current_app.send_task(
            APPLY_TASK,
            args=[plan],
            exchange=HOSTS_EXCHANGE,
            routing_key=run.host,
            declare=[],
            # A plan that waited longer than a run may go without a beat is stale: recovery
            # takes such a run for dead, and the agent must not act on it afterwards.
            expires=float(settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT),
        )
    except Exception as exc:
        logger.exception("Apply %s: cannot send the plan to %s", run.operation_id, run.host)
        run.finish(
            ApplyRun.Status.FAILED,
            error=f"Cannot hand the apply to the agent of host {run.host!r}: {exc}",
        )
        return run
    run.log = f"{timezone.now():%H:%M:%S} handed to the agent of host {run.host}"
    ApplyRun.all_hosts.filter(pk=run.pk).update(log=run.log)
    logger.info("Apply %s handed to the agent of %s", run.operation_id, run.host)
    return run


def _run_for(message: ApplyProgress | ApplyOutcome, *, sender: str | None, kind: str):
    """The run a message from a host's agent speaks of, once its sender is checked: None (the
    refusal logged) when the sender is not the broker user of the host it names, or the run
    is not that host's."""
    try:
        sender_host(message.host, sender=sender)
        run = ApplyRun.all_hosts.filter(pk=message.run_id).first()
        if run is None or str(run.operation_id) != message.operation_id:
            raise SenderRefused(f"no apply run {message.run_id} ({message.operation_id})")
        if run.host != message.host:
            raise SenderRefused(
                f"apply run {message.run_id} belongs to host {run.host!r}, not {message.host!r}"
            )
    except SenderRefused as exc:
        logger.warning(
            "%s refused: %s",
            kind,
            exc,
            extra={"sender": sender or "", "claimed_host": message.host},
        )
        return None
    return run


def _parsed(parse, payload, *, sender: str | None, kind: str):
    try:
        return parse(payload)
    except MessageInvalid as exc:
        claimed = payload.get("host", "") if isinstance(payload, dict) else ""
        logger.warning(
            "%s refused: %s",
            kind,
            exc,
            extra={"sender": sender or "", "claimed_host": str(claimed)[:63]},
        )
        return None


def remote_progress_receive(payload: dict, *, sender: str | None) -> bool:
    """Take in one progress message of a host's apply: the run's heartbeat moves (while it
    runs) and the service's step goes to the live progress. Returns whether it was taken."""
    message = _parsed(ApplyProgress.from_payload, payload, sender=sender, kind="Apply progress")
    if message is None:
        return False
    run = _run_for(message, sender=sender, kind="Apply progress")
    if run is None:
        return False
    if run.status != ApplyRun.Status.RUNNING:
        return False  # its outcome is recorded: late steps change nothing
    with host_scope(run.host):
        if ApplyRun.all_hosts.filter(pk=run.pk, status=ApplyRun.Status.RUNNING).update(
            heartbeat_at=timezone.now()
        ):
            runs_state_bump()
        if message.service:
            op = message.operation_id
            progress.progress_update(op, message.service, message.step, message.message)
            if message.notes:
                progress.progress_note(op, message.service, **message.notes)
    return True


def remote_outcome_receive(payload: dict, *, sender: str | None) -> ApplyRun | None:
    """Take in how a host's apply ended: ``finish`` with its results, or ``interrupt`` when its
    agent repaired it after a crash (services still pending are marked interrupted). A run
    that has already ended keeps its verdict. Returns the run, or None when refused."""
    message = _parsed(ApplyOutcome.from_payload, payload, sender=sender, kind="Apply outcome")
    if message is None:
        return None
    run = _run_for(message, sender=sender, kind="Apply outcome")
    if run is None:
        return None
    with host_scope(run.host):
        fields = {"results": message.results or {}, "journal": message.journal or {}}
        log = "\n".join(part for part in (run.log, message.log) if part)
        if message.status == ApplyRun.Status.INTERRUPTED:
            moved = run.interrupt(message.error, log=log, **fields)
            if moved:
                _progress_interrupted(str(run.operation_id), message.error)
        else:
            moved = run.finish(message.status, error=message.error, log=log, **fields)
        if not moved:
            logger.warning(
                "Apply %s of %s ended %s, but it was already %s; that stands",
                run.operation_id,
                host_name(),
                message.status,
                run.status,
            )
        else:
            logger.info("Apply %s of %s ended %s", run.operation_id, run.host, run.status)
    return run


def _progress_interrupted(operation_id: str, reason: str) -> None:
    try:
        for entry in progress.progress_get(operation_id):
            if entry["status"] not in progress.TERMINAL:
                progress.progress_update(operation_id, entry["service"], Step.INTERRUPTED, reason)
    except Exception:
        logger.warning("could not mark the progress of %s interrupted", operation_id)
