"""Liveness of an apply run and what recovery does with dead ones (runtime to the contract)."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from assignments import progress
from assignments.models import ApplyRun
from assignments.runtime.base import ContainerRuntime
from assignments.services import APPLY_LOCK_KEY, apply_recover, worker_identity


class RecordingRuntime(ContainerRuntime):
    """Keeps the journals recover() was given; restores every service named in them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []

    def recover(self, journal=None) -> list[str]:
        self.calls.append(dict(journal or {}))
        return sorted(journal or {})


def gone_identity() -> str:
    """The identity a process of this host had, once it has exited."""
    child = subprocess.Popen(["true"])
    child.wait()
    host, namespace, _, started = worker_identity().split("|")
    return f"{host}|{namespace}|{child.pid}|{started}"


def stopping(old_id: str = "old-1") -> dict:
    return {
        "step": "stopping",
        "name": "proj_ai-clip_1",
        "old_id": old_id,
        "new_id": None,
        "was_running": True,
    }


def running_run(*, worker: str, beat_age: float = 0.0, journal=None) -> ApplyRun:
    now = timezone.now()
    run = ApplyRun.objects.create(
        status=ApplyRun.Status.RUNNING,
        services=["ai-clip"],
        worker=worker,
        started_at=now,
        heartbeat_at=now - timedelta(seconds=beat_age),
        journal=journal or {"ai-clip": stopping()},
    )
    cache.set(APPLY_LOCK_KEY, str(run.operation_id), 300)
    progress.progress_init(str(run.operation_id), ["ai-clip"])
    return run


@pytest.mark.django_db
def test_a_run_whose_worker_is_gone_is_recovered_at_once_despite_its_lock():
    run = running_run(worker=gone_identity())
    runtime = RecordingRuntime()

    assert apply_recover(runtime=runtime) == ["ai-clip"]

    assert runtime.calls == [{"ai-clip": stopping()}]
    run.refresh_from_db()
    assert run.status == "interrupted" and run.is_finished
    assert "worker carrying out this apply stopped" in run.error and "ai-clip" in run.error
    assert run.journal["ai-clip"]["step"] == "recovered"
    assert cache.get(APPLY_LOCK_KEY) is None
    assert progress.progress_get(str(run.operation_id))[0]["status"] == "interrupted"


@pytest.mark.django_db
def test_a_live_run_is_left_alone(settings):
    settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT = 15
    run = running_run(worker=worker_identity(), beat_age=1)
    runtime = RecordingRuntime()

    assert apply_recover(runtime=runtime) == []

    assert runtime.calls == []
    run.refresh_from_db()
    assert run.status == "running"
    assert cache.get(APPLY_LOCK_KEY) == str(run.operation_id)


@pytest.mark.django_db
def test_a_run_whose_heartbeat_stopped_is_dead_wherever_its_worker_ran(settings):
    settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT = 15
    run = running_run(worker="elsewhere|pid:[1]|4242|99", beat_age=16)

    apply_recover(runtime=RecordingRuntime())

    run.refresh_from_db()
    assert run.status == "interrupted" and "stopped answering" in run.error


@pytest.mark.django_db
def test_a_queued_run_that_lost_its_lock_is_interrupted():
    run = ApplyRun.objects.create(status=ApplyRun.Status.QUEUED, services=["ai-clip"])

    apply_recover(runtime=RecordingRuntime())

    run.refresh_from_db()
    assert run.status == "interrupted" and "before a worker took it up" in run.error


@pytest.mark.django_db
def test_a_finished_run_whose_restore_failed_is_repaired_later():
    """The engine went away mid-rollback: the run ended failed with its record unsettled; the
    next recovery hands that record to the runtime and settles it."""
    entry = {**stopping(), "step": "restore_failed"}
    run = ApplyRun.objects.create(
        status=ApplyRun.Status.FAILED,
        services=["ai-clip"],
        journal={"ai-clip": entry},
        finished_at=timezone.now(),
        error="ai-clip: failed",
    )
    runtime = RecordingRuntime()

    assert apply_recover(runtime=runtime) == ["ai-clip"]
    assert runtime.calls == [{"ai-clip": entry}]
    run.refresh_from_db()
    assert run.status == "interrupted" and "Recovery repaired" in run.error
    assert apply_recover(runtime=runtime) == []  # settled: not handed over again
    assert runtime.calls[-1] == {}


@pytest.mark.django_db
def test_recovery_does_not_run_while_an_apply_holds_the_lock():
    cache.set(APPLY_LOCK_KEY, "someone-else", 60)
    ApplyRun.objects.create(
        status=ApplyRun.Status.FAILED,
        services=["ai-clip"],
        journal={"ai-clip": {**stopping(), "step": "restore_failed"}},
    )
    runtime = RecordingRuntime()

    assert apply_recover(runtime=runtime) == []
    assert runtime.calls == []


def test_an_apply_waits_for_recovery_to_finish_instead_of_answering_busy():
    import threading

    from assignments.services.apply import _lock_take

    cache.set(APPLY_LOCK_KEY, "recovery-1", 60)
    threading.Timer(0.3, cache.delete, args=[APPLY_LOCK_KEY]).start()

    _lock_take("op-1")

    assert cache.get(APPLY_LOCK_KEY) == "op-1"


def test_an_apply_is_busy_when_recovery_outlasts_the_wait(monkeypatch):
    from assignments.services import ApplyBusy
    from assignments.services import apply as apply_module

    monkeypatch.setattr(apply_module, "RECOVERY_WAIT_S", 0.2)
    cache.set(APPLY_LOCK_KEY, "recovery-1", 60)

    with pytest.raises(ApplyBusy, match="repairing what an interrupted apply left behind"):
        apply_module._lock_take("op-1")
    assert cache.get(APPLY_LOCK_KEY) == "recovery-1"


def test_an_apply_is_busy_at_once_while_another_apply_runs():
    from assignments.services import ApplyBusy
    from assignments.services.apply import _lock_take

    cache.set(APPLY_LOCK_KEY, "op-0", 60)

    with pytest.raises(ApplyBusy, match=r"already running \(operation op-0\)"):
        _lock_take("op-1")
