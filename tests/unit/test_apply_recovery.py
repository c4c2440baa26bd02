"""Liveness of an apply run and what recovery does with dead ones (runtime to the contract)."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from applies import progress
from applies.models import ApplyRun
from applies.runtime.base import ContainerRuntime
from applies.services import RECOVERY_LOCK_KEY, apply_recover, worker_identity


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
    progress.progress_init(str(run.operation_id), ["ai-clip"])
    return run


@pytest.mark.django_db
def test_a_run_whose_worker_is_gone_is_recovered_at_once():
    run = running_run(worker=gone_identity())
    runtime = RecordingRuntime()

    assert apply_recover(runtime=runtime) == ["ai-clip"]

    assert runtime.calls == [{"ai-clip": stopping()}]
    run.refresh_from_db()
    assert run.status == "interrupted" and run.is_finished
    assert "worker carrying out this apply stopped" in run.error and "ai-clip" in run.error
    assert run.journal["ai-clip"]["step"] == "recovered"
    assert cache.get(RECOVERY_LOCK_KEY) is None
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


@pytest.mark.django_db
def test_a_run_whose_heartbeat_stopped_is_dead_wherever_its_worker_ran(settings):
    settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT = 15
    run = running_run(worker="elsewhere|pid:[1]|4242|99", beat_age=16)

    apply_recover(runtime=RecordingRuntime())

    run.refresh_from_db()
    assert run.status == "interrupted" and "stopped answering" in run.error


@pytest.mark.django_db
def test_a_queued_run_no_worker_took_up_in_time_is_interrupted():
    from applies.services import APPLY_QUEUE_TTL

    run = ApplyRun.objects.create(status=ApplyRun.Status.QUEUED, services=["ai-clip"])
    ApplyRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - timedelta(seconds=APPLY_QUEUE_TTL + 1)
    )

    apply_recover(runtime=RecordingRuntime())

    run.refresh_from_db()
    assert run.status == "interrupted" and "No worker took this apply up" in run.error


@pytest.mark.django_db
def test_a_fresh_queued_run_is_left_for_its_worker():
    run = ApplyRun.objects.create(status=ApplyRun.Status.QUEUED, services=["ai-clip"])

    assert apply_recover(runtime=RecordingRuntime()) == []

    run.refresh_from_db()
    assert run.status == "queued"


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
def test_recovery_does_not_run_while_another_recovery_holds_its_lock():
    cache.set(RECOVERY_LOCK_KEY, "recovery-someone-else", 60)
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

    from applies.services import recovery_wait

    cache.set(RECOVERY_LOCK_KEY, "recovery-1", 60)
    threading.Timer(0.3, cache.delete, args=[RECOVERY_LOCK_KEY]).start()

    assert recovery_wait() is True
    assert cache.get(RECOVERY_LOCK_KEY) is None


@pytest.mark.django_db
def test_an_apply_is_busy_when_recovery_outlasts_the_wait(monkeypatch, reference_inventory):
    from applies import services as apply_module
    from applies.services import ApplyBusy, apply_start

    monkeypatch.setattr(apply_module, "RECOVERY_WAIT_S", 0.2)
    monkeypatch.setattr(apply_module, "apply_recover", list)
    cache.set(RECOVERY_LOCK_KEY, "recovery-1", 60)

    with pytest.raises(ApplyBusy, match="repairing what an interrupted apply left behind"):
        apply_start()
    assert cache.get(RECOVERY_LOCK_KEY) == "recovery-1"
    assert not ApplyRun.objects.exists()


@pytest.mark.django_db
def test_an_apply_is_busy_at_once_while_another_apply_runs(reference_inventory):
    from applies.services import ApplyBusy, apply_start

    other = running_run(worker=worker_identity())

    with pytest.raises(ApplyBusy, match=rf"already running \(operation {other.operation_id}\)"):
        apply_start()
    assert ApplyRun.objects.count() == 1


# --- state changes: guarded, and one active apply as a database rule ---------------------------


@pytest.mark.django_db
def test_an_interrupted_run_stays_interrupted_when_its_worker_finishes_late():
    """Recovery closed the run while its worker was silent; the worker then comes back and
    reports success. The late finish changes nothing."""
    run = running_run(worker=worker_identity())
    late = ApplyRun.objects.get(pk=run.pk)  # the worker's copy, still "running"

    assert run.interrupt("The worker carrying out this apply stopped answering (20 s).")
    assert (
        late.finish(ApplyRun.Status.SUCCEEDED, results={"ai-clip": {"outcome": "healthy"}}) is False
    )

    run.refresh_from_db()
    assert run.status == "interrupted" and "stopped answering" in run.error
    assert run.results == {}
    assert late.status == "interrupted"  # the instance follows the database


@pytest.mark.django_db
def test_claim_moves_only_a_queued_run():
    run = ApplyRun.objects.create(status=ApplyRun.Status.QUEUED)
    twice = ApplyRun.objects.get(pk=run.pk)

    assert run.claim(worker="w1") is True
    assert twice.claim(worker="w2") is False  # a task delivered twice runs once

    run.refresh_from_db()
    assert (run.status, run.worker) == ("running", "w1")
    assert run.started_at == run.heartbeat_at  # started now, and alive from that moment
    assert run.started_at > run.created_at


@pytest.mark.django_db
def test_finish_takes_only_an_outcome_and_leaves_a_finished_run_alone():
    run = ApplyRun.objects.create(status=ApplyRun.Status.QUEUED)
    with pytest.raises(ValueError):
        run.finish(ApplyRun.Status.INTERRUPTED)
    assert run.finish(ApplyRun.Status.FAILED, error="engine refused") is True
    assert run.finish(ApplyRun.Status.SUCCEEDED) is False
    assert run.interrupt("too late") is False
    run.refresh_from_db()
    assert (run.status, run.error) == ("failed", "engine refused")


@pytest.mark.django_db(transaction=True)
def test_the_database_refuses_a_second_active_apply():
    from django.db import IntegrityError

    ApplyRun.objects.create(status=ApplyRun.Status.QUEUED)
    with pytest.raises(IntegrityError):
        ApplyRun.objects.create(status=ApplyRun.Status.RUNNING)
    # Finished runs are history: any number of them.
    ApplyRun.objects.create(status=ApplyRun.Status.FAILED)
    ApplyRun.objects.create(status=ApplyRun.Status.INTERRUPTED)
    assert ApplyRun.objects.count() == 3


# --- logging: an error only when something needs repair -----------------------------------------


class UnreachableRuntime(ContainerRuntime):
    def recover(self, journal=None) -> list[str]:
        from applies.runtime.base import RuntimeUnavailable

        raise RuntimeUnavailable("no engine at unix:///nonexistent.sock")


@pytest.mark.django_db
def test_with_no_engine_and_nothing_interrupted_recovery_logs_no_error(caplog):
    with caplog.at_level("DEBUG", logger="applies.services"):
        for _ in range(3):
            assert apply_recover(runtime=UnreachableRuntime()) == []

    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


@pytest.mark.django_db
def test_with_no_engine_an_interrupted_run_is_reported_once_not_at_every_retry(caplog):
    ApplyRun.objects.create(
        status=ApplyRun.Status.FAILED,
        services=["ai-clip"],
        journal={"ai-clip": {**stopping(), "step": "restore_failed"}},
        finished_at=timezone.now(),
    )
    with caplog.at_level("DEBUG", logger="applies.services"):
        for _ in range(3):
            apply_recover(runtime=UnreachableRuntime())

    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "Cannot repair interrupted applies yet" in errors[0].getMessage()


# --- a run whose worker stopped says so ---------------------------------------------------------


@pytest.mark.django_db
def test_a_run_whose_heartbeat_is_stale_says_the_worker_stopped(settings, staff_client):
    settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT = 15
    running_run(worker="elsewhere|pid:[1]|4242|99", beat_age=40)

    body = staff_client.get("/api/system/gpu-config/status").json()

    assert body["run_status"] == "running"
    assert "the worker stopped; repair waits for a worker" in body["stall"]


@pytest.mark.django_db
def test_a_live_run_has_no_stall(settings, staff_client):
    from gpuconfig_site.heartbeat import WorkerHeartbeat

    settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT = 15
    WorkerHeartbeat.beat(hostname="w@test")
    running_run(worker=worker_identity(), beat_age=1)

    assert staff_client.get("/api/system/gpu-config/status").json()["stall"] == ""


@pytest.mark.django_db
def test_a_queued_run_with_no_worker_alive_says_so_at_once(staff_client):
    from gpuconfig_site.heartbeat import HEARTBEAT_KEY

    cache.delete(HEARTBEAT_KEY)
    ApplyRun.objects.create(status=ApplyRun.Status.QUEUED, services=["ai-clip"])

    body = staff_client.get("/api/system/gpu-config/status").json()

    assert body["run_status"] == "queued"
    assert body["stall"].startswith("No worker is running; the apply waits for one")


@pytest.mark.django_db
def test_readyz_fails_the_worker_check_while_an_apply_is_stuck(settings):
    from gpuconfig_site.heartbeat import WorkerHeartbeat
    from ops.health import check_worker

    settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT = 15
    WorkerHeartbeat.beat(hostname="w@test")  # a worker lives, but not the apply's
    assert check_worker().ok is True
    run = running_run(worker="elsewhere|pid:[1]|4242|99", beat_age=40)

    check = check_worker()

    assert check.ok is False
    assert str(run.operation_id) in check.detail and "worker stopped" in check.detail


# --- recovery from a record: a copy that became healthy is kept ---------------------------------


class RecordEngine:
    """An engine to ``recreate.Engine``'s contract holding two containers: the old one, set
    aside and stopped, and the copy under the service's name (running, in ``copy_health``)."""

    errors = ()

    def __init__(self, copy_health):
        from applies.runtime.recreate import Seen

        def seen(cid, name, status, health):
            return Seen(cid, name, status, health, "", 0, "", 0, {}, (), None, 10, {})

        self.containers = {
            "old-1": seen("old-1", "proj_ai-clip_1-gpuconfig-old-old1", "exited", "healthy"),
            "new-1": seen("new-1", "proj_ai-clip_1", "running", copy_health),
        }
        self.calls: list[tuple[str, str]] = []

    def inspect(self, ref):
        return self.containers.get(ref) or next(
            (c for c in self.containers.values() if c.name == ref), None
        )

    def check_health(self, seen):
        return seen

    def remove(self, container_id, *, force=False):
        self.calls.append(("remove", container_id))
        self.containers.pop(container_id, None)

    def rename(self, container_id, name):
        self.calls.append(("rename", container_id))

    def start(self, container_id):
        self.calls.append(("start", container_id))


def created(step="created") -> dict:
    return {
        "step": step,
        "name": "proj_ai-clip_1",
        "old_id": "old-1",
        "new_id": "new-1",
        "was_running": True,
    }


def test_a_copy_healthy_now_is_kept_though_the_record_stopped_at_its_health_wait():
    from applies.runtime.recreate import recover_recorded

    engine = RecordEngine("healthy")

    assert recover_recorded(engine, created()) is False

    assert engine.calls == [("remove", "old-1")]  # the old one goes; the copy stays


@pytest.mark.parametrize("health", ["starting", "unhealthy", None])
def test_a_copy_not_healthy_now_is_replaced_by_the_old_container(health):
    from applies.runtime.recreate import recover_recorded

    engine = RecordEngine(health)

    assert recover_recorded(engine, created()) is True

    assert engine.calls == [("remove", "new-1"), ("rename", "old-1"), ("start", "old-1")]


def test_a_healthy_copy_the_apply_was_rolling_back_is_not_kept():
    from applies.runtime.recreate import recover_recorded

    engine = RecordEngine("healthy")

    assert recover_recorded(engine, created("rolling_back")) is True

    assert ("remove", "new-1") in engine.calls and ("start", "old-1") in engine.calls


@pytest.mark.django_db
def test_an_apply_queued_by_another_request_meanwhile_makes_this_one_busy(monkeypatch):
    """Two Apply requests at once both pass the first look; the database lets one run be
    queued and the other request answers busy, naming the first one's operation."""
    from applies import services as apply_module
    from applies.services import ApplyBusy, apply_start

    competitor: list[ApplyRun] = []

    def diff_while_another_request_queues(runtime, targets):
        competitor.append(ApplyRun.objects.create(status=ApplyRun.Status.QUEUED))
        return []

    monkeypatch.setattr(apply_module, "apply_recover", list)
    monkeypatch.setattr(apply_module, "get_runtime", RecordingRuntime)
    monkeypatch.setattr(apply_module, "diff", diff_while_another_request_queues)

    with pytest.raises(ApplyBusy) as refused:
        apply_start()

    assert f"already running (operation {competitor[0].operation_id})" in str(refused.value)
    assert list(ApplyRun.objects.values_list("pk", flat=True)) == [competitor[0].pk]
