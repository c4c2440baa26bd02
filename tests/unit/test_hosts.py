"""Every GPU, assignment, configuration, version and apply run belongs to one host; a request
names its host with ``?host=`` (default: this machine's), and an action on an offline host is a
503 at once. Host B here is a second registered host whose scans are taken in as an agent's
would be (``scan_report_ingest``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from applies.models import ApplyRun
from applies.runtime import RuntimeUnavailable, get_runtime
from assignments.models import Assignment, ConfigVersion, GpuConfig
from fleet.models import Host
from fleet.services import host_register
from gpuconfig_site.celery import HOST_HEADER, _enter_host, _leave_host, _publish_host
from gpuconfig_site.hosts import host_key, host_name, host_scope
from gpus.backends.base import GpuReading
from gpus.models import Gpu
from gpus.services import gpu_scan_run, scan_report_ingest

B_GPUS = [
    GpuReading(index=0, uuid="GPU-b0", name="NVIDIA L4", vram_total_mb=23034, vram_used_mb=500),
    GpuReading(index=1, uuid="GPU-b1", name="NVIDIA T4", vram_total_mb=15360, vram_used_mb=300),
]


@pytest.fixture
def host_b(db, reference_inventory):
    """Host B registered, online (a heartbeat just now), with its first scan taken in."""
    host = host_register(name="gpu-b", display_name="Lab box")
    Host.objects.filter(pk=host.pk).update(last_heartbeat=timezone.now())
    with host_scope("gpu-b"):
        summary = scan_report_ingest(readings=B_GPUS, backend="nvml")
    assert summary["error"] is None, summary
    return host


def _offline(host: Host) -> None:
    Host.objects.filter(pk=host.pk).update(last_heartbeat=timezone.now() - timedelta(hours=1))


@pytest.mark.django_db
def test_each_host_sees_only_its_own_rows(host_b, settings):
    local = settings.GPUCONFIG_HOST_NAME
    assert host_name() == local
    assert sorted(Gpu.objects.values_list("uuid", flat=True)) != ["GPU-b0", "GPU-b1"]
    assert Gpu.objects.count() == 2  # the reference inventory's
    with host_scope("gpu-b"):
        assert sorted(Gpu.objects.values_list("uuid", flat=True)) == ["GPU-b0", "GPU-b1"]
        # B's first scan made B's own initial plan, on B's GPUs only.
        uuids = set(Assignment.objects.values_list("gpu_uuid", flat=True))
        assert uuids <= {"GPU-b0", "GPU-b1", ""}
        assert Assignment.objects.count() == Assignment.all_hosts.filter(host="gpu-b").count() > 0
        assert GpuConfig.load().host == "gpu-b"
        assert ConfigVersion.objects.first().host == "gpu-b"
    assert Gpu.all_hosts.count() == 4
    assert set(Assignment.objects.values_list("host", flat=True)) == {local}


@pytest.mark.django_db
def test_a_request_names_its_host_and_an_unknown_one_is_a_404(host_b, viewer_client):
    local = {g["uuid"] for g in viewer_client.get("/api/system/gpus").json()["gpus"]}
    on_b = {g["uuid"] for g in viewer_client.get("/api/system/gpus?host=gpu-b").json()["gpus"]}
    assert on_b == {"GPU-b0", "GPU-b1"}
    assert local.isdisjoint(on_b)
    by_header = viewer_client.get("/api/system/gpus", headers={"X-GPUConfig-Host": "gpu-b"})
    assert {g["uuid"] for g in by_header.json()["gpus"]} == on_b

    answer = viewer_client.get("/api/system/gpu-config?host=nowhere")
    assert answer.status_code == 404
    assert answer.json() == {"detail": "Unknown host 'nowhere'."}


def _save_on_b(client):
    return client.put(
        "/api/system/gpu-config?host=gpu-b",
        {
            "strategy": "manual",
            "assignments": [
                {"service": "ai-llm", "gpu_index": 0},
                {"service": "ai-yolo26", "gpu_index": 1},
                {"service": "ai-florence", "gpu_index": 1},
                {"service": "ai-clip", "gpu_index": 1},
                {"service": "ai-enrichment", "gpu_index": 0},
            ],
        },
        format="json",
    )


@pytest.mark.django_db
def test_a_save_on_one_host_leaves_the_other_as_it_was(
    host_b, staff_client, settings, django_capture_on_commit_callbacks
):
    before = list(Assignment.objects.values_list("service__name", "gpu_uuid"))
    local_strategy = GpuConfig.load().strategy
    with host_scope("gpu-b"):
        versions = ConfigVersion.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        answer = _save_on_b(staff_client)
    assert answer.status_code == 200, answer.content
    assert list(Assignment.objects.values_list("service__name", "gpu_uuid")) == before
    assert GpuConfig.load().strategy == local_strategy != "manual"
    with host_scope("gpu-b"):
        saved = dict(Assignment.objects.values_list("service__name", "gpu_uuid"))
        assert saved["ai-yolo26"] == "GPU-b1"
        assert GpuConfig.load().strategy == "manual"
        assert ConfigVersion.objects.count() == versions + 1
    # B's files are the centre's copy, apart: this machine's stack never reads B's plan.
    config_dir = Path(settings.GPUCONFIG_CONFIG_DIR)
    assert "GPU-b1" in (config_dir / "hosts" / "gpu-b" / "gpu-assignments.yml").read_text()
    local = config_dir / "gpu-assignments.yml"
    assert not local.exists() or "GPU-b" not in local.read_text()
    shown = staff_client.get("/api/system/gpu-config?host=gpu-b").json()
    assert shown["strategy"] == "manual"
    assert staff_client.get("/api/system/gpu-config").json()["strategy"] == local_strategy


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    ["/api/system/gpu-config/apply?host=gpu-b", "/api/system/gpu-config/detect?host=gpu-b"],
)
def test_an_action_on_an_offline_host_is_a_503_naming_it_and_queues_nothing(
    host_b, staff_client, path
):
    _offline(host_b)
    answer = staff_client.post(path, {}, format="json")
    assert answer.status_code == 503
    detail = answer.json()["detail"]
    assert "'gpu-b' is offline" in detail and "last seen" in detail
    assert not ApplyRun.all_hosts.exists()


@pytest.mark.django_db
def test_a_never_seen_host_is_refused_the_same_way(host_b, staff_client):
    Host.objects.filter(pk=host_b.pk).update(last_heartbeat=None)
    answer = staff_client.post("/api/system/gpu-config/apply?host=gpu-b", {}, format="json")
    assert answer.status_code == 503
    assert "never been seen" in answer.json()["detail"]


@pytest.mark.django_db
def test_reads_of_an_offline_host_still_answer_with_its_gpus_kept(host_b, viewer_client):
    _offline(host_b)
    answer = viewer_client.get("/api/system/gpus?host=gpu-b")
    assert answer.status_code == 200
    assert {g["uuid"] for g in answer.json()["gpus"]} == {"GPU-b0", "GPU-b1"}
    assert all(g["available"] for g in answer.json()["gpus"])  # stale, never lost


@pytest.mark.django_db
def test_apply_locks_are_per_host(host_b, settings):
    ApplyRun.objects.create(status=ApplyRun.Status.RUNNING)
    with host_scope("gpu-b"):
        ApplyRun.objects.create(status=ApplyRun.Status.QUEUED)  # B applies meanwhile
        with pytest.raises(IntegrityError), transaction.atomic():
            ApplyRun.objects.create(status=ApplyRun.Status.QUEUED)
    assert ApplyRun.all_hosts.filter(status__in=ApplyRun.ACTIVE).count() == 2


@pytest.mark.django_db
def test_this_machine_never_scans_or_drives_containers_for_another_host(host_b):
    with host_scope("gpu-b"):
        summary = gpu_scan_run()
        assert "scanned by its own agent" in summary["error"]
        assert Gpu.objects.count() == 2
        with pytest.raises(RuntimeUnavailable, match="through its agent only"):
            get_runtime()


def test_cache_keys_of_the_default_host_are_unchanged_and_others_are_apart(settings):
    assert host_key("gpus:last-scan") == "gpus:last-scan"
    with host_scope("gpu-b"):
        assert host_key("gpus:last-scan") == "gpus:last-scan@gpu-b"


def test_a_task_runs_on_the_host_it_was_enqueued_for():
    headers: dict = {}
    with host_scope("gpu-b"):
        _publish_host(headers=headers)
    assert headers[HOST_HEADER] == "gpu-b"

    class Task:
        class request:  # noqa: N801 - Celery's attribute name
            gpuconfig_host = "gpu-b"

    _enter_host(task_id="t1", task=Task)
    try:
        assert host_name() == "gpu-b"
    finally:
        _leave_host(task_id="t1")
    assert host_name() != "gpu-b"


@pytest.mark.django_db
def test_requests_naming_no_host_get_the_default_host_and_background_work_this_machine(
    host_b, viewer_client, settings
):
    settings.GPUCONFIG_DEFAULT_HOST = "gpu-b"
    answer = viewer_client.get("/api/system/gpus")
    assert {g["uuid"] for g in answer.json()["gpus"]} == {"GPU-b0", "GPU-b1"}
    # A task or thread with no host set (beat's scans, repairs, file syncs) is this machine's.
    assert host_name() == settings.GPUCONFIG_HOST_NAME
    _enter_host(task_id="t2", task=None)
    try:
        assert host_name() == settings.GPUCONFIG_HOST_NAME
    finally:
        _leave_host(task_id="t2")


@pytest.mark.django_db
def test_the_admin_edits_the_host_the_request_works_on(host_b, client, django_user_model):
    admin_user = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    client.force_login(admin_user)
    assert client.get("/admin/assignments/assignment/?host=gpu-b").status_code == 200
    with host_scope("gpu-b"):
        b_row = Assignment.objects.first()
    page = f"/admin/assignments/assignment/{b_row.pk}/change/"
    # Another host's row is not found from the default host (the admin sends back to the list).
    assert client.get(page).status_code == 302
    assert client.get(f"{page}?host=gpu-b").status_code == 200
