"""The inventory follows the hardware: upsert by UUID, lost GPUs, moved indices, fallback and
restore of assignments, and the generated files following along."""

from __future__ import annotations

import importlib
import logging
import threading

import pytest
import yaml
from django.utils import timezone

from assignments.models import Assignment, ConfigVersion
from assignments.selectors import config_current
from assignments.services import config_save
from gpus.models import Gpu, GpuSample
from gpus.services import gpu_scan_run
from tests.conftest import config_files

pytestmark = pytest.mark.django_db

A5500 = "GPU-5d2a1c3e-8f4b-4a6d-9e21-7c0b3f9a5500"
A400 = "GPU-0b7e44f2-19c8-4e3a-b6d0-2f5e8a1c0400"


def _write(path, entries):
    path.write_text(yaml.safe_dump(entries))


def _entries(path):
    return yaml.safe_load(path.read_text())


def _scan(capture):
    with capture(execute=True):
        return gpu_scan_run()


def _override_device(settings, service):
    doc = yaml.safe_load(config_files(settings)["docker-compose.gpu-override.yml"])
    svc = doc["services"].get(service)
    if svc is None:
        return None
    return svc["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"][0]


def test_first_scan_creates_gpus_samples_and_an_initial_plan(
    simulated_gpus, django_capture_on_commit_callbacks, settings
):
    summary = _scan(django_capture_on_commit_callbacks)
    assert summary["changes"]["added"] == [A5500, A400]
    assert Gpu.objects.count() == 2
    assert GpuSample.objects.count() == 2
    assert Assignment.objects.count() == 5
    assert ConfigVersion.objects.get().source == "initial"
    assert _override_device(settings, "ai-llm") == "0"


def test_the_first_scans_plan_is_saved_with_the_budgets_it_lowered(
    simulated_gpus, django_capture_on_commit_callbacks, settings
):
    """On the reference box the initial plan only fits with ai-enrichment's budget lowered:
    the saved configuration (and the override file) carry that budget, not the 6.8 GB
    default that would over-commit its GPU."""
    _scan(django_capture_on_commit_callbacks)
    enrichment = Assignment.objects.get(service__name="ai-enrichment")
    # What the A400 leaves it beside the rest of the initial plan (the planner is deterministic).
    assert enrichment.vram_budget_override == 2.3
    doc = yaml.safe_load(config_files(settings)["docker-compose.gpu-override.yml"])
    env = doc["services"]["ai-enrichment"]["environment"]
    assert f"VRAM_BUDGET_GB={enrichment.vram_budget_override:g}" in env
    assert not [w for w in config_current()["warnings"] if "over" in w.lower()]


def test_scans_upsert_by_uuid_and_keep_samples(simulated_gpus, django_capture_on_commit_callbacks):
    _scan(django_capture_on_commit_callbacks)
    entries = _entries(simulated_gpus)
    entries[0]["vram_used_mb"] = 1000
    _write(simulated_gpus, entries)
    summary = _scan(django_capture_on_commit_callbacks)
    assert not any(summary["changes"].values())
    assert Gpu.objects.count() == 2
    assert Gpu.objects.get(uuid=A5500).vram_used_mb == 1000
    assert GpuSample.objects.filter(gpu__uuid=A5500).count() == 2


def test_concurrent_scans_share_one_scan(simulated_gpus, monkeypatch):
    """Two scans at once: one runs the backend, the other waits and reuses its result."""
    import gpus.backends as backends
    import gpus.services

    # The threads have their own database connections, outside this test's transaction: keep
    # them off the database so nothing they write outlives the test.
    monkeypatch.setattr(
        gpus.services, "gpu_inventory_sync", lambda **kw: gpus.services.SyncResult()
    )

    calls = []
    started = threading.Event()
    release = threading.Event()
    real_scan = backends.scan

    def slow_scan(name=None):
        calls.append(name)
        started.set()
        release.wait(30)
        return real_scan(name)

    monkeypatch.setattr(backends, "scan", slow_scan)
    results = {}

    def first():
        results["first"] = gpu_scan_run()

    # Release the first scan only once the second has found the lock taken.
    # (Django keeps one cache object per thread: patch the class, which they share.)
    from django.core.cache import caches

    refused = threading.Event()
    cache_class = type(caches["default"])
    real_add = cache_class.add

    def add(self, key, *args, **kwargs):
        taken = real_add(self, key, *args, **kwargs)
        if not taken and key == gpus.services.SCAN_LOCK_KEY:
            refused.set()
        return taken

    monkeypatch.setattr(cache_class, "add", add)
    t = threading.Thread(target=first)
    t.start()
    assert started.wait(30)
    waiter = threading.Thread(target=lambda: results.setdefault("second", gpu_scan_run()))
    waiter.start()
    assert refused.wait(30)
    release.set()
    t.join(60)
    waiter.join(60)
    assert len(calls) == 1
    assert results["second"]["seq"] == results["first"]["seq"]


def test_saving_the_fallback_gpu_keeps_the_saved_choice(
    simulated_gpus, django_capture_on_commit_callbacks
):
    """A page saves every row; a row that names the fallback GPU does not overwrite the choice
    that comes back with the card, while a different GPU does."""
    _scan(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="isolation_first")
    entries = _entries(simulated_gpus)
    _write(simulated_gpus, [entries[0]])
    _scan(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        config_save(
            assignments=[{"service": "ai-enrichment", "gpu_index": 0, "vram_budget_override": 3.0}]
        )
    enrichment = Assignment.objects.get(service__name="ai-enrichment")
    assert (enrichment.gpu_uuid, enrichment.effective_gpu_index) == (A400, 0)
    assert enrichment.vram_budget_override == 3.0
    _write(simulated_gpus, entries)
    _scan(django_capture_on_commit_callbacks)
    enrichment.refresh_from_db()
    assert enrichment.effective_gpu_index == 1


def test_a_lost_gpu_is_kept_unavailable_and_its_services_fall_back(
    simulated_gpus, django_capture_on_commit_callbacks, settings, caplog
):
    _scan(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="isolation_first")
    assert Assignment.objects.get(service__name="ai-enrichment").gpu_index == 1

    entries = _entries(simulated_gpus)
    seen = Gpu.objects.get(uuid=A400).last_seen
    _write(simulated_gpus, [entries[0]])  # the A400 disappears
    with caplog.at_level(logging.WARNING):
        summary = _scan(django_capture_on_commit_callbacks)
    assert summary["changes"]["lost"] == [A400]
    lost = Gpu.objects.get(uuid=A400)
    # Lost, and last seen by the scan before: the one that missed it does not move the time.
    assert (lost.available, lost.last_seen) == (False, seen)

    enrichment = Assignment.objects.get(service__name="ai-enrichment")
    assert enrichment.gpu_index == 1 and enrichment.gpu_uuid == A400  # the saved choice is kept
    assert enrichment.effective_gpu_index == 0
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ai-enrichment" in m and "GPU 1" in m and "GPU 0" in m for m in messages), messages
    warnings = config_current()["warnings"]
    assert any("ai-enrichment" in w and "falling back" in w for w in warnings), warnings
    assert _override_device(settings, "ai-enrichment") == "0"
    assert ConfigVersion.objects.first().source == "fallback"

    # The card comes back: the saved assignment applies again.
    _write(simulated_gpus, entries)
    summary = _scan(django_capture_on_commit_callbacks)
    assert summary["changes"]["returned"] == [A400]
    enrichment.refresh_from_db()
    assert enrichment.effective_gpu_index == 1 and not enrichment.is_falling_back
    assert _override_device(settings, "ai-enrichment") == "1"
    assert not any("falling back" in w for w in config_current()["warnings"])


def test_a_gpu_reported_lost_by_the_driver_is_unavailable(
    simulated_gpus, django_capture_on_commit_callbacks
):
    _scan(django_capture_on_commit_callbacks)
    entries = _entries(simulated_gpus)
    entries[1]["available"] = False
    _write(simulated_gpus, entries)
    summary = _scan(django_capture_on_commit_callbacks)
    assert summary["changes"]["lost"] == [A400]
    assert Gpu.objects.get(uuid=A400).available is False


def test_with_no_gpu_left_services_are_unplaced_not_pointed_at_nothing(
    simulated_gpus, django_capture_on_commit_callbacks, settings
):
    _scan(django_capture_on_commit_callbacks)
    _write(simulated_gpus, [])
    _scan(django_capture_on_commit_callbacks)
    assert all(a.effective_gpu_index is None for a in Assignment.objects.all())
    override = config_files(settings)["docker-compose.gpu-override.yml"]
    assert yaml.safe_load(override)["services"] == {}
    assert "Not placed on any GPU" in override
    assert any("no GPU is left" in w for w in config_current()["warnings"])


def test_reordered_cards_keep_their_assignments_by_uuid(
    simulated_gpus, django_capture_on_commit_callbacks, settings
):
    _scan(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="isolation_first")
    entries = _entries(simulated_gpus)
    entries[0]["index"], entries[1]["index"] = 1, 0  # the cards swap slots
    _write(simulated_gpus, entries)
    summary = _scan(django_capture_on_commit_callbacks)
    assert sorted(summary["changes"]["reindexed"]) == sorted([A5500, A400])
    llm = Assignment.objects.get(service__name="ai-llm")
    assert (llm.gpu_uuid, llm.gpu_index) == (A5500, 1)
    assert _override_device(settings, "ai-llm") == "1"
    assert _override_device(settings, "ai-enrichment") == "0"


def test_a_new_card_is_added(simulated_gpus, django_capture_on_commit_callbacks):
    _scan(django_capture_on_commit_callbacks)
    entries = _entries(simulated_gpus)
    entries.append({**entries[1], "index": 2, "uuid": "GPU-new", "name": "NVIDIA RTX A2000"})
    _write(simulated_gpus, entries)
    summary = _scan(django_capture_on_commit_callbacks)
    assert summary["changes"]["added"] == ["GPU-new"]
    assert list(Gpu.objects.filter(available=True).values_list("index", flat=True)) == [0, 1, 2]


def test_a_failing_explicit_backend_keeps_the_inventory_and_says_why(
    simulated_gpus, django_capture_on_commit_callbacks, settings
):
    _scan(django_capture_on_commit_callbacks)
    simulated_gpus.write_text("- index: [not, valid\n")
    summary = _scan(django_capture_on_commit_callbacks)
    assert summary["error"]
    assert Gpu.objects.filter(available=True).count() == 2


def test_old_samples_are_pruned(simulated_gpus, django_capture_on_commit_callbacks, settings):
    from datetime import timedelta

    from django.utils import timezone

    _scan(django_capture_on_commit_callbacks)
    GpuSample.objects.update(
        taken_at=timezone.now() - timedelta(seconds=settings.GPUCONFIG_SAMPLE_RETENTION + 5)
    )
    _scan(django_capture_on_commit_callbacks)
    assert GpuSample.objects.count() == 2  # only the new scan's


def test_history_api_exposes_samples(
    simulated_gpus, django_capture_on_commit_callbacks, staff_client
):
    _scan(django_capture_on_commit_callbacks)
    _scan(django_capture_on_commit_callbacks)
    body = staff_client.get("/api/system/gpus/history").json()
    assert [len(g["samples"]) for g in body["gpus"]] == [2, 2]
    assert body["gpus"][0]["samples"][0]["vram_used_mb"] == 19763


def test_detect_gpus_command_prints_the_inventory(simulated_gpus, capsys):
    import json

    from django.core.management import call_command

    call_command("detect_gpus", "--json")
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "simulated"
    assert [g["index"] for g in out["gpus"]] == [0, 1]


def test_a_fallback_is_data_and_its_sentence_is_composed_when_read(
    simulated_gpus, django_capture_on_commit_callbacks
):
    """Lost GPU, target GPU and since when are stored; GPU names of any length fit (the
    sentence is not stored) and the sentence names both GPUs the way the planner does."""
    entries = _entries(simulated_gpus)
    entries[0]["name"] = "NVIDIA RTX A5500 " + "x" * 180
    entries[1]["name"] = "NVIDIA RTX A400 " + "y" * 180
    _write(simulated_gpus, entries)
    _scan(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        config_save(strategy="isolation_first")
    _write(simulated_gpus, [entries[0]])
    lost_at = timezone.now()
    _scan(django_capture_on_commit_callbacks)

    enrichment = Assignment.objects.get(service__name="ai-enrichment")
    assert enrichment.is_falling_back
    assert lost_at <= enrichment.fallback_since <= timezone.now()
    assert (enrichment.lost_gpu_uuid, enrichment.fallback_gpu_uuid) == (A400, A5500)
    warning = next(w for w in config_current()["warnings"] if w.startswith("ai-enrichment:"))
    assert warning == (
        f"ai-enrichment: GPU 1 (RTX A400 {'y' * 180}) is unavailable; "
        f"falling back to GPU 0 (RTX A5500 {'x' * 180}) until it returns."
    )
    since = enrichment.fallback_since
    _scan(django_capture_on_commit_callbacks)  # nothing changed: the fallback keeps its start
    enrichment.refresh_from_db()
    assert enrichment.fallback_since == since


def test_the_fallback_migration_turns_stored_sentences_into_data(transactional_db):
    """0003 keeps an old fallback (flagged by its sentence) as a fallback from its saved GPU."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    before = [("assignments", "0002_seed_catalog"), ("gpus", "0001_initial")]
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    # A transactional test before this one may have flushed the seeded catalog.
    importlib.import_module("assignments.migrations.0002_seed_catalog").seed(old_apps, None)
    Service = old_apps.get_model("assignments", "AiService")
    OldAssignment = old_apps.get_model("assignments", "Assignment")
    OldAssignment.objects.create(
        service=Service.objects.get(name="ai-enrichment"),
        gpu_index=1,
        gpu_uuid=A400,
        fallback_gpu_index=0,
        fallback_gpu_uuid=A5500,
        fallback_reason="ai-enrichment: GPU 1 is unavailable; falling back to GPU 0.",
    )
    OldAssignment.objects.create(service=Service.objects.get(name="ai-llm"), gpu_index=0)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    enrichment = Assignment.objects.get(service__name="ai-enrichment")
    assert enrichment.is_falling_back and enrichment.lost_gpu_uuid == A400
    assert enrichment.effective_gpu_index == 0
    assert not Assignment.objects.get(service__name="ai-llm").is_falling_back
