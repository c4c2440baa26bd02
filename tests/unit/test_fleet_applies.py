"""Applies on a fleet host: the centre's plan and its checks on what the agent reports
(``applies.remote``), the reports' shapes (``fleet.messages``), and the agent's local journal
and its repair at start (``fleet.applying``). The broker and the engines are the integration
tests' (tests/integration/test_fleet_applies.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from django.utils import timezone

from applies import progress
from applies.models import ApplyRun
from applies.remote import remote_outcome_receive, remote_plan, remote_progress_receive
from applies.runtime.base import ContainerRuntime, RuntimeUnavailable
from applies.services import apply_start
from assignments.services import config_save
from fleet import applying
from fleet.messages import ApplyOutcome, ApplyProgress, MessageInvalid
from fleet.routing import APPLY_OUTCOME_TASK, broker_user_for
from fleet.services import host_register
from gpuconfig_site.hosts import host_scope
from gpus.backends.base import GpuReading
from gpus.services import scan_report_ingest

SERVICES = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")
READINGS = [
    GpuReading(index=0, uuid="GPU-r0", name="NVIDIA RTX A5500", vram_total_mb=24564),
    GpuReading(index=1, uuid="GPU-r1", name="NVIDIA RTX A400", vram_total_mb=4094),
]
OP = "0b8e7f52-4f7d-4e0c-9d6e-2f1a3c5b7d90"


@pytest.fixture
def two_hosts(db, reference_inventory, settings):
    """Hosts gpu-a and gpu-b registered, each with its first scan, over a broker that says
    who published (RabbitMQ's ``user_id``)."""
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/x"
    for name in ("gpu-a", "gpu-b"):
        host_register(name=name)
        with host_scope(name):
            assert scan_report_ingest(readings=READINGS, backend="nvml")["error"] is None
            config_save(
                strategy="manual", assignments=[{"service": s, "gpu_index": 0} for s in SERVICES]
            )
    return "gpu-a", "gpu-b"


def running_run(host: str) -> ApplyRun:
    with host_scope(host):
        run, _ = apply_start(actor="test")
    assert run.claim(worker=f"agent:{host}")
    return run


def ids(run: ApplyRun) -> dict:
    return {"host": run.host, "run_id": run.pk, "operation_id": str(run.operation_id)}


# --- the reports' shapes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, why",
    [
        ({"host": "gpu-a", "run_id": 1, "operation_id": OP, "service": "ai-llm"}, "step"),
        ({"host": "gpu-a", "run_id": 1, "operation_id": OP, "step": "healthy"}, "step"),
        ({"host": "gpu-a", "run_id": 0, "operation_id": OP}, "run_id"),
        ({"host": "gpu-a", "run_id": True, "operation_id": OP}, "run_id"),
        ({"host": "gpu-a", "run_id": 1, "operation_id": "nope"}, "operation_id"),
        ({"host": "GPU A", "run_id": 1, "operation_id": OP}, "host"),
        (
            {"host": "gpu-a", "run_id": 1, "operation_id": OP, "service": "a", "step": "done"},
            "step",
        ),
        (
            {
                "host": "gpu-a",
                "run_id": 1,
                "operation_id": OP,
                "service": "ai-llm",
                "step": "healthy",
                "notes": {"status": "succeeded"},
            },
            "notes",
        ),
        ([], "object"),
    ],
)
def test_a_malformed_progress_report_is_refused(payload, why):
    with pytest.raises(MessageInvalid, match=why):
        ApplyProgress.from_payload(payload)


def test_an_outcome_must_name_an_outcome_and_map_services_to_objects():
    base = {"host": "gpu-a", "run_id": 3, "operation_id": OP}
    with pytest.raises(MessageInvalid, match="status"):
        ApplyOutcome.from_payload({**base, "status": "running"})
    with pytest.raises(MessageInvalid, match="results"):
        ApplyOutcome.from_payload({**base, "status": "failed", "results": {"ai-llm": "x"}})
    outcome = ApplyOutcome(
        **base, status="partial", results={"ai-llm": {"outcome": "healthy"}}, journal={}
    )
    assert ApplyOutcome.from_payload(outcome.as_payload()) == outcome


# --- the centre -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_apply_on_another_host_is_started_without_asking_any_engine(two_hosts, settings):
    """Only the host's agent sees its containers: the run plans every enabled service, and
    this machine's engine (here a runtime that cannot even be built) is never asked."""
    settings.GPUCONFIG_CONTAINER_RUNTIME = "no.such.Runtime"
    with host_scope("gpu-b"):
        run, pending = apply_start(actor="test")
    assert run.host == "gpu-b" and run.status == ApplyRun.Status.QUEUED
    assert sorted(pending) == sorted(SERVICES) == sorted(run.services)


@pytest.mark.django_db
def test_the_plan_carries_each_service_s_target_and_the_generated_files(two_hosts):
    with host_scope("gpu-b"):
        config_save(
            assignments=[{"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 3.5}]
        )
        run, _ = apply_start(actor="test")
        plan = remote_plan(run)
    assert (plan["host"], plan["run_id"], plan["operation_id"]) == (
        "gpu-b",
        run.pk,
        str(run.operation_id),
    )
    targets = {t["service"]: t for t in plan["services"]}
    assert set(targets) == set(SERVICES)
    assert targets["ai-enrichment"]["device_ids"] == ["1"]
    assert targets["ai-enrichment"]["budget_gb"] == 3.5
    assert targets["ai-llm"]["device_ids"] == ["0"]
    assert "VRAM_BUDGET_GB=3.5" in plan["files"]["docker-compose.gpu-override.yml"]
    json.dumps(plan)  # it travels as JSON


@pytest.mark.django_db
def test_progress_from_the_run_s_own_host_moves_its_heartbeat_and_its_progress(two_hosts):
    run = running_run("gpu-b")
    ApplyRun.all_hosts.filter(pk=run.pk).update(heartbeat_at=timezone.now().replace(year=2020))
    report = {**ids(run), "service": "ai-clip", "step": "waiting_health", "message": "wait"}

    assert remote_progress_receive(report, sender=broker_user_for("gpu-b"))

    run.refresh_from_db()
    assert run.heartbeat_at.year != 2020
    with host_scope("gpu-b"):
        entry = {e["service"]: e for e in progress.progress_get(str(run.operation_id))}["ai-clip"]
    assert (entry["status"], entry["message"]) == ("waiting_health", "wait")


@pytest.mark.django_db
def test_another_host_s_broker_user_cannot_report_for_a_run(two_hosts, caplog):
    run = running_run("gpu-b")
    beat = run.heartbeat_at
    a_user = broker_user_for("gpu-a")
    claiming_b = {**ids(run), "service": "ai-clip", "step": "failed", "message": "x"}
    as_a = {**claiming_b, "host": "gpu-a"}

    assert not remote_progress_receive(claiming_b, sender=a_user)
    assert not remote_progress_receive(as_a, sender=a_user)
    assert remote_outcome_receive({**ids(run), "status": "failed"}, sender=a_user) is None
    assert (
        remote_outcome_receive({**ids(run), "host": "gpu-a", "status": "failed"}, sender=a_user)
        is None
    )
    assert remote_outcome_receive({**ids(run), "status": "failed"}, sender=None) is None

    run.refresh_from_db()
    assert (run.status, run.heartbeat_at, run.error) == (ApplyRun.Status.RUNNING, beat, "")
    refusals = [r.getMessage() for r in caplog.records if " refused: " in r.getMessage()]
    assert len(refusals) == 5
    assert f"broker user '{a_user}' may not speak for host 'gpu-b'" in refusals[0]
    assert "belongs to host 'gpu-b', not 'gpu-a'" in refusals[1]


@pytest.mark.django_db
def test_an_outcome_with_a_wrong_operation_id_is_refused(two_hosts):
    run = running_run("gpu-b")
    wrong = {**ids(run), "operation_id": OP, "status": "succeeded"}
    assert remote_outcome_receive(wrong, sender=broker_user_for("gpu-b")) is None
    run.refresh_from_db()
    assert run.status == ApplyRun.Status.RUNNING


@pytest.mark.django_db
def test_an_interrupted_outcome_ends_the_run_and_its_pending_services(two_hosts):
    run = running_run("gpu-b")
    outcome = {
        **ids(run),
        "status": "interrupted",
        "error": "The agent carrying out this apply stopped; it repaired the containers.",
        "journal": {"ai-clip": {"step": "recovered", "name": "c", "old_id": "1"}},
    }
    ended = remote_outcome_receive(outcome, sender=broker_user_for("gpu-b"))
    assert ended.status == ApplyRun.Status.INTERRUPTED
    assert ended.journal["ai-clip"]["step"] == "recovered"
    with host_scope("gpu-b"):
        statuses = {e["status"] for e in progress.progress_get(str(run.operation_id))}
    assert statuses == {"interrupted"}
    # A second copy of the outcome (the agent resent it) changes nothing.
    again = {**outcome, "status": "succeeded"}
    assert remote_outcome_receive(again, sender=broker_user_for("gpu-b")).status == "interrupted"


@pytest.mark.django_db
def test_a_dead_run_on_another_host_is_closed_for_the_next_apply_and_left_to_its_agent(
    two_hosts, settings, caplog
):
    """Its agent stopped beating: the next apply on that host closes it (no engine of this
    machine is asked; the agent repairs from its own journal when it starts again)."""
    settings.GPUCONFIG_CONTAINER_RUNTIME = "no.such.Runtime"
    dead = running_run("gpu-b")
    ApplyRun.all_hosts.filter(pk=dead.pk).update(heartbeat_at=timezone.now().replace(year=2020))

    with host_scope("gpu-b"):
        run, _ = apply_start(actor="test")

    dead.refresh_from_db()
    assert dead.status == ApplyRun.Status.INTERRUPTED
    assert "its agent repairs the containers from its own journal" in dead.error
    assert run.status == ApplyRun.Status.QUEUED and run.host == "gpu-b"
    assert not [r for r in caplog.records if "Cannot repair" in r.getMessage()]


# --- the agent's journal and repair ------------------------------------------------------------


class RecordingRuntime(ContainerRuntime):
    """The runtime contract's ``recover``: records what it was asked to repair and answers
    the services whose old container it put back."""

    def __init__(self, restored=()):
        super().__init__()
        self.asked: list[dict] = []
        self.restored = list(restored)

    def recover(self, journal=None):
        self.asked.append(dict(journal or {}))
        return self.restored


class SentTasks:
    """The part of a Celery app the agent publishes through; keeps what it was given."""

    def __init__(self, fail: bool = False):
        self.conf = SimpleNamespace(broker_url="amqp://gpuconfig-agent-gpu-b:pw@broker//")
        self.sent: list[tuple[str, dict, dict]] = []
        self.fail = fail

    def send_task(self, name, args, **options):
        if self.fail:
            raise ConnectionError("the broker does not answer")
        self.sent.append((name, args[0], options))


def plan_for(run_id: int = 7) -> dict:
    return {"host": "gpu-b", "run_id": run_id, "operation_id": OP}


def test_the_file_journal_holds_each_entry_on_disk_before_returning(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    journal = applying.ApplyJournal.begin(plan_for())
    entry = {"step": "stopping", "name": "x_ai-clip_1", "old_id": "abc", "new_id": None}

    journal("ai-clip", entry)

    on_disk = json.loads(journal.path.read_text())
    assert on_disk["state"] == "running"
    assert on_disk["journal"] == {"ai-clip": entry}
    assert list(journal.path.parent.iterdir()) == [journal.path]  # no temp file left


def test_a_run_left_running_is_repaired_at_start_and_its_outcome_kept_until_sent(
    settings, tmp_path
):
    settings.VAR_DIR = tmp_path
    journal = applying.ApplyJournal.begin(plan_for())
    journal("ai-clip", {"step": "created", "name": "c", "old_id": "o", "new_id": "n"})
    journal("ai-llm", {"step": "done", "name": "l", "old_id": "o2", "new_id": "n2"})
    runtime = RecordingRuntime(restored=["ai-clip"])

    assert applying.apply_repair(runtime_factory=lambda: runtime) == ["ai-clip"]

    assert runtime.asked == [
        {"ai-clip": {"step": "created", "name": "c", "old_id": "o", "new_id": "n"}}
    ]
    kept = json.loads(journal.path.read_text())
    assert kept["state"] == "finished"
    assert kept["outcome"]["status"] == "interrupted"
    assert "restored the previous container of: ai-clip" in kept["outcome"]["error"]
    assert kept["outcome"]["journal"]["ai-clip"]["step"] == "recovered"
    assert kept["outcome"]["journal"]["ai-llm"]["step"] == "done"

    # The broker is away: the outcome stays on disk; once it answers, it is sent and goes.
    down = SentTasks(fail=True)
    assert applying.outbox_flush(down) == 0 and journal.path.exists()
    up = SentTasks()
    assert applying.outbox_flush(up) == 1
    assert not journal.path.exists()
    ((name, payload, options),) = up.sent
    assert name == APPLY_OUTCOME_TASK
    assert options["user_id"] == "gpuconfig-agent-gpu-b"
    assert ApplyOutcome.from_payload(payload).status == "interrupted"
    # Nothing is left to repair or send.
    assert applying.apply_repair(runtime_factory=lambda: RecordingRuntime()) == []


def test_repair_waits_for_an_engine_that_does_not_answer(settings, tmp_path, monkeypatch):
    settings.VAR_DIR = tmp_path
    journal = applying.ApplyJournal.begin(plan_for())
    journal("ai-clip", {"step": "stopping", "name": "c", "old_id": "o", "new_id": None})

    def no_engine():
        raise RuntimeUnavailable("no engine")

    assert applying.apply_repair(runtime_factory=no_engine) == []
    assert json.loads(journal.path.read_text())["state"] == "repair_pending"
    # Whatever engine this machine has, the agent's is still away: the outbox's own retry of
    # the repair fails as well, and nothing is sent before the repair.
    monkeypatch.setattr(applying, "get_runtime", no_engine)
    assert applying.outbox_flush(SentTasks(), grace_s=0) == 0

    runtime = RecordingRuntime()
    applying.apply_repair(runtime_factory=lambda: runtime)
    assert list(runtime.asked[0]) == ["ai-clip"]
    assert json.loads(journal.path.read_text())["outcome"]["status"] == "interrupted"


def test_a_plan_for_another_host_is_not_carried_out(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.GPUCONFIG_HOST_NAME = "gpu-a"
    with pytest.raises(ValueError, match="gpu-b"):
        applying.apply_carry_out(plan_for(), app=SentTasks())
    assert not (tmp_path / applying.JOURNAL_FOLDER).exists()


def test_a_plan_whose_journal_cannot_be_written_fails_before_any_engine_step(settings, tmp_path):
    blocked = tmp_path / "var"
    blocked.write_text("a file where the agent's folder should be")
    settings.VAR_DIR = blocked
    settings.GPUCONFIG_HOST_NAME = "gpu-b"
    settings.GPUCONFIG_CONTAINER_RUNTIME = "no.such.Runtime"  # never built
    app = SentTasks()

    outcome = applying.apply_carry_out({**plan_for(), "services": []}, app=app)

    assert outcome.status == "failed" and "journal" in outcome.error
    ((name, payload, _options),) = app.sent
    assert name == APPLY_OUTCOME_TASK and payload["status"] == "failed"
