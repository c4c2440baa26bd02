"""Saving is all or nothing: the files are staged before the transaction commits and moved into
place after; a folder that cannot be written refuses the save with nothing changed; a crash
between commit and rename is repaired from the database. Also the validation gaps: budgets
that round to 0, and saves that change nothing."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from django.test import Client

from assignments.models import Assignment, ConfigVersion, GpuConfig
from assignments.services import config_files_sync, config_save
from tests.conftest import config_files, saved_state

pytestmark = pytest.mark.django_db

URL = "/api/system/gpu-config"


@pytest.fixture
def put(django_capture_on_commit_callbacks):
    def do(client, body):
        with django_capture_on_commit_callbacks(execute=True):
            return client.put(URL, body, format="json")

    return do


@pytest.fixture
def unwritable_config_dir(settings):
    """Makes the config folder unwritable, even for root: immutable (``chattr +i``) where the
    filesystem supports it, else a path under a regular file (nothing can be created there)."""
    folder = Path(settings.GPUCONFIG_CONFIG_DIR)
    undo = []

    def make():
        folder.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
            undo.append(lambda: subprocess.run(["chattr", "-i", str(folder)], check=True))
            return folder
        blocker = folder.parent / "not-a-folder"
        blocker.write_text("")
        settings.GPUCONFIG_CONFIG_DIR = blocker / "config"
        return settings.GPUCONFIG_CONFIG_DIR

    yield make
    for step in undo:
        step()


def test_an_unwritable_config_dir_refuses_the_save_with_a_json_503_and_changes_nothing(
    put, staff_client, reference_inventory, settings, unwritable_config_dir
):
    folder = unwritable_config_dir()
    before = saved_state(settings) if folder.exists() else None
    res = put(staff_client, {"strategy": "isolation_first"})
    assert res.status_code == 503
    assert res["Content-Type"].startswith("application/json")
    assert "Cannot write the generated files" in res.json()["detail"]
    assert "nothing was saved" in res.json()["detail"]
    if before is not None:
        assert saved_state(settings) == before
    assert GpuConfig.load().strategy != "isolation_first"


def page_form(**overrides) -> dict:
    """The page's whole form as it sends it (every service's GPU field, the saved values), with
    ``overrides``."""
    return {
        "strategy": "manual",
        "budget-ai-enrichment": "",
        **{
            f"gpu-{name}": "" if index is None else str(index)
            for name, index in Assignment.objects.values_list("service__name", "gpu_index")
        },
        **overrides,
    }


def test_an_unwritable_config_dir_is_shown_on_the_page_and_nothing_is_saved(
    staff_user, reference_inventory, settings, unwritable_config_dir
):
    unwritable_config_dir()
    versions = ConfigVersion.objects.count()
    client = Client(headers={"HX-Request": "true"})
    client.force_login(staff_user)
    form = page_form(**{"gpu-ai-clip": "1"})
    res = client.post("/settings/gpu/save/", form)
    assert res.status_code == 503
    assert "Cannot write the generated files" in res.content.decode()
    assert ConfigVersion.objects.count() == versions


def test_the_files_are_moved_into_place_only_after_commit(
    staff_client, reference_inventory, settings, django_capture_on_commit_callbacks
):
    folder = Path(settings.GPUCONFIG_CONFIG_DIR)
    before = config_files(settings)
    temps_before = set(folder.glob(".*.tmp"))  # the initial plan's, never committed in a test
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        res = staff_client.put(URL, {"strategy": "isolation_first"}, format="json")
    assert res.status_code == 200
    staged = set(folder.glob(".*.tmp")) - temps_before
    assert len(staged) == 2, "both new files are staged beside the old ones before commit"
    assert config_files(settings) == before
    for callback in callbacks:
        callback()
    assert not staged & set(folder.glob(".*.tmp"))
    assert "strategy: isolation_first" in config_files(settings)["gpu-assignments.yml"]


def test_a_crash_between_commit_and_rename_is_repaired_from_the_database(
    reference_inventory, settings, django_capture_on_commit_callbacks, monkeypatch
):
    """The save committed but its process died before the rename (its after-commit step never
    ran): the next sync (worker start, then periodic) writes the files from the database and
    removes the orphaned temp files."""
    with django_capture_on_commit_callbacks(execute=False):
        config_save(strategy="isolation_first")
    folder = Path(settings.GPUCONFIG_CONFIG_DIR)
    orphans = list(folder.glob(".*.tmp"))
    assert orphans
    assert "isolation_first" not in (config_files(settings)["gpu-assignments.yml"] or "")
    old = time.time() - 3600
    for orphan in orphans:
        os.utime(orphan, (old, old))

    import django.db

    from applies.tasks import _recover_on_worker_start

    # What a worker does when it starts (keeping the test's database connection open).
    monkeypatch.setattr(django.db, "close_old_connections", lambda: None)
    _recover_on_worker_start()
    assert "strategy: isolation_first" in config_files(settings)["gpu-assignments.yml"]
    assert not list(folder.glob(".*.tmp"))
    # Repeating the sync writes nothing new: the same configuration renders the same text.
    stamp = (folder / "gpu-assignments.yml").stat().st_mtime_ns
    config_files_sync()
    assert (folder / "gpu-assignments.yml").stat().st_mtime_ns == stamp


def test_the_periodic_sync_runs_under_beat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["sync-config-files"]
    assert entry["task"] == "assignments.tasks.config_files_sync_task"
    from assignments.tasks import config_files_sync_task

    assert config_files_sync_task.name == entry["task"]


@pytest.mark.parametrize("budget", [1e-9, 0.004])
def test_a_budget_that_rounds_to_zero_is_a_400(
    put, staff_client, reference_inventory, settings, budget
):
    before = saved_state(settings)
    item = {"service": "ai-enrichment", "gpu_index": 0, "vram_budget_override": budget}
    res = put(staff_client, {"assignments": [item]})
    assert res.status_code == 400
    assert "at least 0.01 GB" in res.json()["detail"]
    assert saved_state(settings) == before


def test_a_budget_that_rounds_to_zero_is_a_form_error_on_the_page(staff_user, reference_inventory):
    client = Client(headers={"HX-Request": "true"})
    client.force_login(staff_user)
    versions = ConfigVersion.objects.count()
    res = client.post(
        "/settings/gpu/save/",
        page_form(**{"gpu-ai-enrichment": "0", "budget-ai-enrichment": "0.004"}),
    )
    assert res.status_code == 422
    assert "at least 0.01 GB" in res.content.decode()
    assert ConfigVersion.objects.count() == versions


def test_a_budget_that_rounds_to_zero_is_a_form_error_in_the_admin(
    client, django_user_model, reference_inventory
):
    from django.urls import reverse

    client.force_login(django_user_model.objects.create_superuser("root", "", "pw-root-123"))
    assignment = Assignment.objects.get(service__name="ai-enrichment")
    url = reverse("admin:assignments_assignment_change", args=[assignment.pk])
    res = client.post(url, {"gpu_index": 0, "vram_budget_override": "0.004"})
    assert res.status_code == 200
    assert "at least 0.01 GB" in res.content.decode()


@pytest.mark.parametrize("body", [{"assignments": []}, {"strategy": None}])
def test_a_put_that_changes_nothing_records_no_version(
    put, staff_client, reference_inventory, settings, body
):
    before = saved_state(settings)
    res = put(staff_client, body)
    assert res.status_code == 200
    assert res.json()["changed"] is False
    assert res.json()["version"] == ConfigVersion.objects.first().pk
    assert saved_state(settings) == before


def test_saving_the_saved_assignment_again_records_no_version(
    put, staff_client, reference_inventory, settings
):
    clip = Assignment.objects.get(service__name="ai-clip")
    body = {"assignments": [{"service": "ai-clip", "gpu_index": clip.gpu_index}]}
    before = saved_state(settings)
    assert put(staff_client, body).json()["changed"] is False
    assert saved_state(settings) == before


@pytest.mark.parametrize("where", ["strategy", "catalog", "override", "gpu"])
def test_an_unwritable_config_dir_is_an_admin_error_message_and_nothing_is_saved(
    where, django_user_model, reference_inventory, settings, unwritable_config_dir
):
    from django.urls import reverse

    from assignments.models import AiService, Assignment
    from gpus.models import Gpu

    user = django_user_model.objects.create_superuser("root", "", "pw-root-123")
    client = Client()
    client.force_login(user)
    clip = AiService.objects.get(name="ai-clip")
    clip_gpu = Assignment.objects.get(service=clip).gpu_index
    posts = {
        "strategy": (
            reverse("admin:assignments_gpuconfig_change", args=[GpuConfig.load().pk]),
            {"strategy": "isolation_first"},
        ),
        "catalog": (
            reverse("admin:assignments_aiservice_change", args=[clip.pk]),
            {
                **_admin_form(clip),
                **NO_PARTS,
                "vram_required_mb": clip.vram_required_mb + 512,
            },
        ),
        "override": (
            reverse(
                "admin:assignments_assignment_change",
                args=[Assignment.objects.get(service=clip).pk],
            ),
            {"gpu_index": str(1 - clip_gpu), "vram_budget_override": ""},
        ),
        "gpu": (
            reverse("admin:gpus_gpu_change", args=[Gpu.objects.get(index=1).pk]),
            {"available": ""},
        ),
    }
    url, form = posts[where]
    versions = ConfigVersion.objects.count()
    unwritable_config_dir()

    res = client.post(url, form, follow=True)

    assert res.status_code == 200
    shown = [str(m) for m in res.context["messages"]]
    assert any("Cannot write the generated files" in m for m in shown), shown
    assert ConfigVersion.objects.count() == versions
    assert GpuConfig.load().strategy != "isolation_first"
    assert AiService.objects.get(name="ai-clip").vram_required_mb == clip.vram_required_mb
    assert Assignment.objects.get(service=clip).gpu_index == clip_gpu
    assert Gpu.objects.get(index=1).available


# The catalog's change form carries its hosted models' inline (the management form, no parts).
NO_PARTS = {
    "parts-TOTAL_FORMS": "0",
    "parts-INITIAL_FORMS": "0",
    "parts-MIN_NUM_FORMS": "0",
    "parts-MAX_NUM_FORMS": "1000",
}


def _admin_form(obj) -> dict:
    """The admin change form's fields as a browser would post them, unchanged."""
    from django.forms.models import model_to_dict

    form = {}
    for name, value in model_to_dict(obj).items():
        if value is True:
            form[name] = "on"
        elif value not in (None, False):
            form[name] = value
    return form
