"""Measured VRAM: kept per service at each scan, summarised, shown, and planned with."""

from __future__ import annotations

import math
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from applies.ownership import PROJECT_LABEL, SERVICE_LABEL, service_of
from assignments.planner import GpuView, ServiceDemand, plan
from assignments.planner.needs import CATALOG, MEASURED, measured_need_mb
from assignments.selectors import config_preview, planning_input
from gpus.attribution import ProcessUse
from gpus.backends.base import GpuReading
from gpus.models import Gpu, GpuProcess, ServiceVramSample
from gpus.selectors import percentile, service_vram_summaries
from gpus.services import gpu_inventory_sync, gpu_scan_run
from ops.health import check_pids
from tests.conftest import reference_uuid

pytestmark = pytest.mark.django_db


def measure(service: str, values: list[int], *, gpu_index: int = 0) -> None:
    """Samples of ``service`` one minute apart on GPU ``gpu_index``, the newest taken by the
    last scan (as a scan stamps them)."""
    last_seen = Gpu.objects.order_by("-last_seen").values_list("last_seen", flat=True).first()
    now = last_seen or timezone.now()
    ServiceVramSample.objects.bulk_create(
        ServiceVramSample(
            service=service,
            gpu_uuid=reference_uuid(gpu_index),
            used_mb=value,
            taken_at=now - timedelta(minutes=len(values) - 1 - n),
        )
        for n, value in enumerate(values)
    )


def a5500(**processes) -> GpuReading:
    return GpuReading(
        index=0,
        uuid="GPU-test-0",
        name="NVIDIA RTX A5500",
        vram_total_mb=24564,
        vram_used_mb=20000,
        **processes,
    )


# --- keeping it --------------------------------------------------------------------------------


def test_each_scan_replaces_the_gpu_processes_and_samples_each_service():
    uses = [
        ProcessUse("GPU-test-0", 101, 18000, name="llama-server", service="ai-llm",
                   container_id="a" * 64, container_name="hsi-ai-llm-1"),
        ProcessUse("GPU-test-0", 102, 600, name="python3", service="ai-llm"),
        ProcessUse("GPU-test-0", 4242, 1024, name="ollama"),
    ]  # fmt: skip
    gpu_inventory_sync(readings=[a5500()], processes={"GPU-test-0": uses})

    gpu = Gpu.objects.get(uuid="GPU-test-0")
    rows = {p.pid: p for p in GpuProcess.objects.filter(gpu=gpu)}
    assert set(rows) == {101, 102, 4242}
    assert (rows[101].service, rows[101].container_name) == ("ai-llm", "hsi-ai-llm-1")
    assert rows[4242].service == "" and rows[4242].name == "ollama"
    assert list(ServiceVramSample.objects.values_list("service", "gpu_uuid", "used_mb")) == [
        ("ai-llm", "GPU-test-0", 18600)
    ]

    gpu_inventory_sync(readings=[a5500()], processes={"GPU-test-0": uses[2:]})
    assert list(GpuProcess.objects.values_list("pid", flat=True)) == [4242]
    assert ServiceVramSample.objects.count() == 1  # no service there: no new sample


def test_a_gpu_gone_from_the_scan_keeps_no_processes():
    gpu_inventory_sync(
        readings=[a5500()], processes={"GPU-test-0": [ProcessUse("GPU-test-0", 1, 10)]}
    )
    gpu_inventory_sync(readings=[])
    assert not GpuProcess.objects.exists()


def test_a_real_scan_lists_a_host_process_as_other_with_its_name(simulated_gpus, settings):
    """The simulated backend reports this test's own PID: the real /proc names it, it is in
    no container, so it is another process."""
    text = simulated_gpus.read_text()
    simulated_gpus.write_text(
        text.replace(
            '  pci_bus_id: "00000000:01:00.0"\n',
            f'  pci_bus_id: "00000000:01:00.0"\n  processes:\n    - {{pid: {os.getpid()}, '
            "used_mb: 512}\n",
        )
    )
    summary = gpu_scan_run()

    assert summary["processes"] == {"seen": 1, "unresolved": 0, "proc_root": "/proc"}
    (process,) = GpuProcess.objects.all()
    expected_name = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert (process.pid, process.used_mb, process.name) == (os.getpid(), 512, expected_name)
    assert (process.service, process.container_id, process.resolved) == ("", "", True)


def test_samples_older_than_the_window_are_pruned_at_the_next_scan(settings):
    settings.GPUCONFIG_VRAM_WINDOW = 3600
    settings.GPUCONFIG_SAMPLE_RETENTION = 600
    old = ServiceVramSample.objects.create(
        service="ai-llm", gpu_uuid="x", used_mb=1, taken_at=timezone.now() - timedelta(hours=2)
    )
    kept = ServiceVramSample.objects.create(
        service="ai-llm", gpu_uuid="x", used_mb=1, taken_at=timezone.now() - timedelta(minutes=30)
    )
    gpu_inventory_sync(readings=[a5500()])
    assert list(ServiceVramSample.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not ServiceVramSample.objects.filter(pk=old.pk).exists()


def test_summary_gives_now_peak_and_p95_of_the_per_scan_totals():
    """Two GPUs at one scan add up; p95 is the nearest rank of the 20 scan totals."""
    now = timezone.now()
    for n in range(20):
        taken = now - timedelta(minutes=20 - n)
        ServiceVramSample.objects.create(
            service="ai-llm", gpu_uuid="a", used_mb=1000 + n * 100, taken_at=taken
        )
        ServiceVramSample.objects.create(service="ai-llm", gpu_uuid="b", used_mb=50, taken_at=taken)
    summary = service_vram_summaries()["ai-llm"]
    assert summary.samples == 20
    assert summary.peak_mb == 1000 + 19 * 100 + 50
    assert summary.p95_mb == 1000 + 18 * 100 + 50
    assert summary.now_mb == summary.peak_mb
    assert summary.gpu_uuids == ("a", "b")


def test_percentile_is_nearest_rank():
    assert percentile([5], 0.95) == 5
    assert percentile(list(range(1, 101)), 0.95) == 95
    assert percentile([3, 1, 2], 0.5) == 2


# --- planning with it --------------------------------------------------------------------------


@given(
    catalog=st.integers(1, 100_000),
    minimum=st.integers(0, 100_000),
    p95=st.integers(0, 200_000) | st.none(),
    samples=st.integers(0, 50),
    min_samples=st.integers(0, 20),
    margin=st.floats(-1, 2, allow_nan=False),
)
@hsettings(max_examples=300, deadline=None)
def test_a_measured_need_never_goes_below_the_minimum(
    catalog, minimum, p95, samples, min_samples, margin
):
    need, source = measured_need_mb(
        catalog_mb=catalog,
        minimum_mb=minimum,
        p95_mb=p95,
        samples=samples,
        min_samples=min_samples,
        margin=margin,
    )
    if source == MEASURED:
        assert need >= minimum
        assert need >= p95
        assert samples >= max(min_samples, 1)
    else:
        assert (source, need) == (CATALOG, catalog)


def test_too_few_samples_keep_the_catalog_estimate():
    assert measured_need_mb(
        catalog_mb=3000, minimum_mb=0, p95_mb=6000, samples=9, min_samples=10, margin=0.1
    ) == (3000, CATALOG)
    assert measured_need_mb(
        catalog_mb=3000, minimum_mb=0, p95_mb=6000, samples=10, min_samples=10, margin=0.1
    ) == (math.ceil(6000 * 1.1), MEASURED)


@pytest.mark.parametrize(
    ("strategy", "before", "after"),
    [
        ("vram_based", [0, 0], [0, 1]),
        ("isolation_first", [0, 0], [0, 1]),
        ("latency_optimized", [1, 0], [0, 1]),
    ],
)
def test_an_under_estimating_catalog_changes_the_placement_once_measured(strategy, before, after):
    """Pure planner: the catalog says both services need 3 GB; ``a`` was measured at 6 GB
    (p95), and its measured need (6.6 GB with the margin) takes the 8 GB GPU for itself."""
    gpus = [GpuView(0, "GPU-0", "big", 8192), GpuView(1, "GPU-1", "small", 4096)]
    catalog = [ServiceDemand("a", 3000), ServiceDemand("b", 3000)]
    need, source = measured_need_mb(
        catalog_mb=3000, minimum_mb=0, p95_mb=6000, samples=30, min_samples=10, margin=0.1
    )
    measured = [ServiceDemand("a", need, need_source=source, catalog_mb=3000), catalog[1]]

    assert [p.gpu_index for p in plan(strategy, gpus, catalog).placements] == before
    planned = plan(strategy, gpus, measured)
    assert [p.gpu_index for p in planned.placements] == after
    assert planned.issues == ()


def test_planning_input_takes_measured_needs_and_the_preview_follows(reference_inventory):
    """The LLM (catalog 21.7 GB) was measured at 14.6 GB: with measured needs, vram_based
    puts the enrichment beside it on the 24 GB GPU instead of over-filling the 4 GB one."""
    measure("ai-llm", [15000] * 12)
    data = planning_input()
    llm = next(d for d in data.services if d.name == "ai-llm")
    assert (llm.need_mb, llm.need_source, llm.catalog_mb) == (16500, MEASURED, 22221)
    assert data.measured_available
    catalog_data = planning_input(needs="catalog")
    assert next(d for d in catalog_data.services if d.name == "ai-llm").need_mb == 22221

    by_catalog, _ = config_preview(strategy="vram_based", needs="catalog")
    by_measure, _ = config_preview(strategy="vram_based", needs="measured")
    assert by_catalog.gpu_of("ai-enrichment") == 1
    assert by_measure.gpu_of("ai-enrichment") == 0


def test_warnings_name_the_figure_they_used(reference_inventory):
    """A GPU's warning names the services planned with measured needs; a service's warning
    the figure its need is."""
    measure("ai-llm", [23000] * 12)
    plan_, _ = config_preview(strategy="manual", needs="measured")
    by_gpu = {i.gpu_index: i.message for i in plan_.issues if i.code == "over_capacity"}
    assert by_gpu[0].startswith("GPU 0 (RTX A5500) is over capacity by 4.1 GB: ai-llm needs 24.7")
    assert by_gpu[0].endswith("(needs measured for ai-llm; catalog estimates for the rest)")
    assert by_gpu[1].endswith("(catalog estimate)")
    assert next(d for d in _.services if d.name == "ai-llm").need_mb == math.ceil(23000 * 1.1)
    from assignments.selectors import need_note

    assert need_note(next(d for d in _.services if d.name == "ai-llm"), _) == (
        "measured: p95 22.5 GB + 10 %"
    )

    catalog_plan, _ = config_preview(strategy="manual", needs="catalog")
    assert not any("catalog estimate" in w or "measured" in w for w in catalog_plan.warnings)


def test_a_peak_above_the_budget_is_a_warning_with_its_fix(reference_inventory, key_client):
    measure("ai-enrichment", [6000, 7578, 6500], gpu_index=1)
    body = key_client.get("/api/system/gpu-config").json()
    detail = next(d for d in body["warning_details"] if d["code"] == "measured_above_need")
    assert detail["service"] == "ai-enrichment"
    assert detail["message"].startswith(
        "ai-enrichment peaked at 7.4 GB (24 h), above its 6.8 GB budget: risk of out-of-memory."
    )
    assert "raise its budget to 8.2 GB, or move it" in detail["message"]
    assert detail["suggested_budget_gb"] == 8.2
    assert (detail["needed_mb"], detail["available_mb"]) == (7578, 6963)


def test_a_peak_above_the_catalog_need_is_a_warning(reference_inventory, key_client):
    measure("ai-clip", [1000, 1400])
    messages = key_client.get("/api/system/gpu-config").json()["warnings"]
    assert any(
        m.startswith("ai-clip peaked at 1.4 GB (24 h), above its 1.2 GB catalog need")
        and "move it to a GPU with more free VRAM" in m
        for m in messages
    ), messages


# --- the API -----------------------------------------------------------------------------------


def test_services_carry_measured_vram_and_null_when_unmeasured(reference_inventory, key_client):
    measure("ai-llm", [15000, 16000, 15500])
    services = {
        s["name"]: s for s in key_client.get("/api/system/gpu-config/services").json()["services"]
    }
    assert (
        services["ai-llm"]["vram_used_mb"],
        services["ai-llm"]["vram_peak_mb"],
        services["ai-llm"]["vram_p95_mb"],
    ) == (15500, 16000, 16000)
    assert services["ai-clip"]["vram_used_mb"] is None
    assert services["ai-clip"]["vram_peak_mb"] is None
    assert services["ai-clip"]["vram_p95_mb"] is None


def test_gpus_list_their_processes(reference_inventory, key_client):
    gpu = Gpu.objects.get(index=0)
    GpuProcess.objects.create(
        gpu=gpu, pid=101, name="llama-server", used_mb=18000, service="ai-llm",
        container_id="a" * 64, container_name="hsi-ai-llm-1", seen_at=timezone.now(),
    )  # fmt: skip
    GpuProcess.objects.create(
        gpu=gpu, pid=4242, name="ollama", used_mb=1024, seen_at=timezone.now()
    )
    gpus = {g["index"]: g for g in key_client.get("/api/system/gpus").json()["gpus"]}
    assert gpus[0]["processes"] == [
        {"pid": 101, "name": "llama-server", "used_mb": 18000, "service": "ai-llm",
         "container": "hsi-ai-llm-1", "kind": "compute"},
        {"pid": 4242, "name": "ollama", "used_mb": 1024, "service": None, "container": None,
         "kind": "compute"},
    ]  # fmt: skip
    assert gpus[1]["processes"] == []


@pytest.mark.parametrize(
    "url",
    ["/api/system/gpu-config?needs=guess", "/api/system/gpu-config/preview?strategy=vram_based"
     "&needs=guess", "/api/system/gpu-config?needs=",
     "/api/system/gpu-config/preview?strategy=vram_based&needs="],
)  # fmt: skip
def test_an_unknown_needs_value_is_refused(reference_inventory, key_client, url):
    response = key_client.get(url)
    assert response.status_code == 400
    assert "needs must be one of: measured, catalog" in response.json()["detail"]


def test_preview_says_which_needs_it_used(reference_inventory, key_client):
    measure("ai-llm", [15000] * 12)
    measured = key_client.get("/api/system/gpu-config/preview?strategy=vram_based").json()
    catalog = key_client.get(
        "/api/system/gpu-config/preview?strategy=vram_based&needs=catalog"
    ).json()
    assert (measured["needs"], catalog["needs"]) == ("measured", "catalog")
    gpu_of = {
        name: {a["service"]: a["gpu_index"] for a in body["proposed_assignments"]}
        for name, body in (("measured", measured), ("catalog", catalog))
    }
    assert gpu_of["catalog"]["ai-enrichment"] == 1 and gpu_of["measured"]["ai-enrichment"] == 0


def test_metrics_give_each_services_vram_per_gpu(reference_inventory, key_client):
    gpu = Gpu.objects.get(index=0)
    for pid, used in ((101, 18000), (102, 600)):
        GpuProcess.objects.create(
            gpu=gpu, pid=pid, used_mb=used, service="ai-llm", seen_at=timezone.now()
        )
    text = key_client.get("/metrics").content.decode()
    prefix = (
        f'gpuconfig_service_vram_used_bytes{{gpu_uuid="{gpu.uuid}",'
        f'host="{gpu.host}",service="ai-llm"}} '
    )
    (line,) = [x for x in text.splitlines() if x.startswith(prefix)]
    assert float(line.removeprefix(prefix)) == 18600 * 2**20


# --- the page ----------------------------------------------------------------------------------


def test_page_shows_usage_other_processes_and_the_measured_switch(reference_inventory, staff_user):
    measure("ai-enrichment", [6000, 7578, 6246], gpu_index=1)
    measure("ai-llm", [15000] * 12)
    GpuProcess.objects.create(
        gpu=Gpu.objects.get(index=0), pid=4242, name="ollama", used_mb=1024,
        container_name="ollama", container_id="b" * 64, seen_at=timezone.now(),
    )  # fmt: skip
    client = Client()
    client.force_login(staff_user)
    html = client.get("/settings/gpu/").content.decode()

    assert "uses <strong>6.1 GB</strong> now · peak 7.4 GB (24 h) · budget 6.8 GB" in html
    assert 'class="usage is-over"' in html
    assert "Other processes: 1" in html
    assert "pid 4242</span> ollama · container ollama · 1.0 GB" in html
    assert 'name="needs" value="measured" id="id_needs" checked' in html
    assert "peaked at 7.4 GB (24 h), above its 6.8 GB budget" in html


def test_the_switch_is_off_and_disabled_without_measurements(reference_inventory, staff_user):
    client = Client()
    client.force_login(staff_user)
    html = client.get("/settings/gpu/").content.decode()
    assert 'id="id_needs" disabled' in html
    assert "not measured" in html


# --- gpuconfig check ---------------------------------------------------------------------------


def test_check_fails_without_a_proc_root(settings, tmp_path):
    settings.GPUCONFIG_PROC_ROOT = str(tmp_path / "none")
    check = check_pids()
    assert check.ok is False
    assert "GPU processes cannot be resolved" in check.detail and "pid: host" in check.detail


def test_check_fails_when_the_last_scan_could_not_resolve_pids(simulated_gpus, settings, tmp_path):
    settings.GPUCONFIG_PROC_ROOT = str(tmp_path)  # an empty proc root: no PID resolves
    text = simulated_gpus.read_text()
    simulated_gpus.write_text(
        text.replace(
            '  pci_bus_id: "00000000:01:00.0"\n',
            '  pci_bus_id: "00000000:01:00.0"\n  processes:\n    - {pid: 4242, used_mb: 512}\n',
        )
    )
    gpu_scan_run()
    check = check_pids()
    assert check.ok is False
    assert check.detail.startswith("1 of 1 GPU process(es) at the last scan are not in ")


def test_check_passes_with_the_hosts_proc(simulated_gpus):
    gpu_scan_run()
    check = check_pids()
    assert check.ok is True and check.detail.startswith("host PIDs resolve through /proc")


# --- container to service ----------------------------------------------------------------------

SERVICES = {"ai-llm", "ai-clip"}


@pytest.mark.parametrize(
    ("project", "name", "labels", "recorded", "expected"),
    [
        # The compose label, within the managed project.
        ("hsi", "hsi-ai-llm-1", {SERVICE_LABEL: "ai-llm", PROJECT_LABEL: "hsi"}, {}, "ai-llm"),
        (None, "x-ai-llm-1", {SERVICE_LABEL: "ai-llm", PROJECT_LABEL: "x"}, {}, "ai-llm"),
        # Another project's container of the same name is not ours.
        ("hsi", "other-ai-llm-1", {SERVICE_LABEL: "ai-llm", PROJECT_LABEL: "other"}, {}, None),
        # A service not in the catalog.
        (None, "db-1", {SERVICE_LABEL: "postgres", PROJECT_LABEL: "hsi"}, {}, None),
        # The container gpuconfig recorded for the service (no compose labels).
        ("hsi", "llm-by-hand", {}, {"0123456789ab": "ai-llm"}, "ai-llm"),
        # Named after the service, no compose labels.
        ("hsi", "ai-clip", {}, {}, "ai-clip"),
        (None, "jupyter", {}, {}, None),
    ],
)
def test_a_container_is_a_services_by_label_record_or_name(
    settings, project, name, labels, recorded, expected
):
    settings.GPUCONFIG_COMPOSE_PROJECT = project
    found = service_of(
        name=name,
        labels=labels,
        container_id="0123456789ab" + "c" * 52,
        services=SERVICES,
        recorded=recorded,
    )
    assert found == expected


def test_the_switch_turned_off_plans_with_the_catalog_again(reference_inventory, staff_user):
    """The check view (what the switch posts to) re-plans the table with either figure."""
    from tests.unit.test_views import form_data

    measure("ai-llm", [15000] * 12)
    client = Client()
    client.force_login(staff_user)
    htmx = {"HTTP_HX_REQUEST": "true"}
    on = client.post(
        "/settings/gpu/check/", form_data(needs_switch="1", needs="measured", replan="1"), **htmx
    ).content.decode()
    off = client.post(
        "/settings/gpu/check/", form_data(needs_switch="1", replan="1"), **htmx
    ).content.decode()

    assert 'id="id_needs" checked' in on and "16.1 GB" in on and ">measured</span>" in on
    assert 'id="id_needs" checked' not in off and ">measured</span>" not in off
    assert "21.7 GB" in off
