"""Operating endpoints: /healthz, /readyz (without a container engine) and /metrics."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from applies import progress
from applies.models import ApplyRun
from gpuconfig_site.heartbeat import HEARTBEAT_KEY, WorkerHeartbeat
from gpus.models import Gpu
from tests.conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


@pytest.fixture
def no_engine(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/gpuconfig-test.sock")


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_answers_anyone(anon_client):
    response = anon_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_without_an_engine_and_shows_detail_only_with_the_key(
    anon_client, key_client, reference_inventory, no_engine
):
    WorkerHeartbeat.beat(hostname="celery@test")
    anonymous = anon_client.get("/readyz")
    assert anonymous.status_code == 503
    body = anonymous.json()
    assert body["status"] == "not ready"
    assert body["checks"] == {
        "database": {"status": "pass"},
        "redis": {"status": "pass"},
        "worker": {"status": "pass"},
        "last_scan": {"status": "pass"},
        "engine": {"status": "fail"},
    }
    detailed = key_client.get("/readyz").json()["checks"]
    assert "no container engine answers" in detailed["engine"]["detail"]
    assert detailed["worker"]["detail"].startswith("celery@test beat")
    assert "backend simulated" in detailed["last_scan"]["detail"]


@pytest.mark.django_db
def test_readyz_fails_a_stale_heartbeat_and_a_missing_scan(key_client, settings, no_engine):
    from django.core.cache import cache

    cache.set(HEARTBEAT_KEY, {"at": time.time() - 2 * settings.GPUCONFIG_SCAN_INTERVAL - 1})
    checks = key_client.get("/readyz").json()["checks"]
    assert checks["worker"]["status"] == "fail"
    assert checks["last_scan"] == {
        "status": "fail",
        "detail": "no GPU scan has finished yet (is beat running?)",
    }


def test_metrics_need_the_key_or_an_allowed_address(anon_client, settings, db):
    settings.GPUCONFIG_METRICS_ALLOW = []
    assert anon_client.get("/metrics").status_code == 403
    assert anon_client.get("/metrics", HTTP_X_API_KEY=API_KEY).status_code == 200
    assert anon_client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {API_KEY}").status_code == 200
    assert anon_client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    from apikeys.services import api_key_create

    _row, named = api_key_create(name="prometheus")
    assert anon_client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {named}").status_code == 200
    settings.GPUCONFIG_METRICS_ALLOW = ["10.1.0.0/16"]
    assert anon_client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert anon_client.get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 403


@pytest.mark.django_db
def test_metrics_equal_the_inventory_and_the_last_apply(anon_client, reference_inventory, settings):
    Gpu.objects.filter(index=1).update(temperature_c=61, power_w=17.5)
    now = timezone.now()
    ApplyRun.objects.create(
        status=ApplyRun.Status.FAILED, started_at=now - timedelta(seconds=90), finished_at=now
    )
    last = ApplyRun.objects.create(
        status=ApplyRun.Status.PARTIAL,
        started_at=now - timedelta(seconds=42),
        finished_at=now,
        services=["ai-llm", "ai-clip"],
        results={
            "ai-llm": {"outcome": "healthy", "message": ""},
            "ai-clip": {"outcome": "rolled_back", "message": "unhealthy"},
        },
    )
    op = str(last.operation_id)
    progress.progress_init(op, ["ai-llm", "ai-clip"])
    progress.progress_update(op, "ai-llm", "healthy")
    progress.progress_update(op, "ai-clip", "rolled_back", "unhealthy")

    response = anon_client.get("/metrics", HTTP_X_API_KEY=API_KEY)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    got = samples(response.content.decode())
    host = ("host", settings.GPUCONFIG_HOST_NAME)

    gpus = list(Gpu.objects.filter(available=True))
    assert len(gpus) == 2
    for gpu in gpus:
        labels = (host, ("index", str(gpu.index)), ("name", gpu.name), ("uuid", gpu.uuid))
        labels = tuple(sorted(labels))
        assert got[("gpuconfig_gpu_memory_used_bytes", labels)] == gpu.vram_used_mb * MB
        assert got[("gpuconfig_gpu_memory_total_bytes", labels)] == gpu.vram_total_mb * MB
        assert got[("gpuconfig_gpu_utilization_percent", labels)] == gpu.utilization_percent
        assert got[("gpuconfig_gpu_temperature_celsius", labels)] == gpu.temperature_c
        assert got[("gpuconfig_gpu_power_watts", labels)] == gpu.power_w
        assert got[("gpuconfig_gpu_available", labels)] == 1
    assert got[("gpuconfig_gpus_lost", (host,))] == 0

    from assignments.selectors import config_issues, planning_input

    data = planning_input()
    for demand in data.services:
        key = (host, ("service", demand.name))
        expected_gpu = -1 if demand.current_gpu is None else demand.current_gpu
        assert got[("gpuconfig_service_assigned_gpu", key)] == expected_gpu
        assert got[("gpuconfig_service_planned_memory_bytes", key)] == demand.effective_mb * MB
    codes = [i.code for i in config_issues(data)]
    for code in set(codes):
        assert got[("gpuconfig_plan_warnings", (("code", code), host))] == codes.count(code)

    assert got[("gpuconfig_apply_runs_total", (host, ("outcome", "partial")))] == 1
    assert got[("gpuconfig_apply_runs_total", (host, ("outcome", "failed")))] == 1
    assert got[("gpuconfig_apply_runs_total", (host, ("outcome", "succeeded")))] == 0
    assert got[("gpuconfig_apply_rollbacks_total", (host,))] == 1
    assert got[("gpuconfig_apply_duration_seconds_count", (host,))] == 2
    assert got[("gpuconfig_apply_duration_seconds_sum", (host,))] == pytest.approx(132)
    assert got[("gpuconfig_apply_duration_seconds_bucket", (host, ("le", "60")))] == 1
    assert got[("gpuconfig_last_apply_duration_seconds", (host,))] == pytest.approx(42)
    assert got[("gpuconfig_last_apply_timestamp_seconds", (host,))] == pytest.approx(
        now.timestamp()
    )
    for service, outcome in (("ai-llm", "healthy"), ("ai-clip", "rolled_back")):
        key = (host, ("outcome", outcome), ("service", service))
        assert got[("gpuconfig_last_apply_recreate_seconds", key)] >= 0

    from gpus.selectors import last_scan

    scan = last_scan()
    assert got[("gpuconfig_scan_duration_seconds", (host,))] == scan["duration_s"]
    assert got[("gpuconfig_last_scan_success", (host,))] == 1


@pytest.mark.django_db
def test_a_lost_gpu_is_counted_and_keeps_no_stale_readings(
    anon_client, reference_inventory, settings
):
    Gpu.objects.filter(index=1).update(available=False)
    got = samples(anon_client.get("/metrics", HTTP_X_API_KEY=API_KEY).content.decode())
    assert got[("gpuconfig_gpus_lost", (("host", settings.GPUCONFIG_HOST_NAME),))] == 1
    lost = [k for k in got if k[0] == "gpuconfig_gpu_memory_used_bytes" and ("index", "1") in k[1]]
    assert lost == []


@pytest.mark.django_db
def test_the_grafana_dashboard_only_uses_exported_metrics(anon_client, reference_inventory):
    import re

    ApplyRun.objects.create(
        status=ApplyRun.Status.SUCCEEDED, started_at=timezone.now(), finished_at=timezone.now()
    )
    text = anon_client.get("/metrics", HTTP_X_API_KEY=API_KEY).content.decode()
    # Families without samples yet (no apply has recreated anything) still count as exported.
    exported = {name for name, _labels in samples(text)} | set(
        re.findall(r"^# TYPE (\S+)", text, re.M)
    )
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"gpuconfig_[a-z_]+", target["expr"])
    }
    assert used and used <= exported, used - exported


@pytest.mark.django_db
def test_json_logs_carry_the_request_id_and_the_operation_id(anon_client, settings):
    from pythonjsonlogger.json import JsonFormatter

    from gpuconfig_site.settings import LOGGING
    from ops.logs import ContextFilter, _on_task_prerun, operation_id_var

    spec = dict(LOGGING["formatters"]["json"])
    spec.pop("()")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(**{"fmt": spec.pop("format"), **spec}))
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        response = anon_client.get("/api/system/gpus", HTTP_X_REQUEST_ID="req-1234")
        assert response.status_code == 401
        assert response["X-Request-ID"] == "req-1234"

        from applies.tasks import apply_config_task

        run = ApplyRun.objects.create()
        _on_task_prerun(task=apply_config_task, args=[run.pk])
        logger.warning("inside the apply")
        operation_id_var.set(None)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["request_id"] == "req-1234"
    assert lines[0]["level"] == "WARNING"
    assert lines[-1]["message"] == "inside the apply"
    assert lines[-1]["operation_id"] == str(run.operation_id)


def test_a_malformed_request_id_is_replaced(anon_client):
    response = anon_client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert response["X-Request-ID"] != "bad id\nwith newline"
    assert len(response["X-Request-ID"]) == 32


@pytest.mark.parametrize(
    ("method", "path", "status", "quiet"),
    [
        ("GET", "/static/css/gpuconfig.css", 200, True),
        ("GET", "/healthz", 200, True),
        ("GET", "/readyz", 200, True),
        ("GET", "/readyz", 503, False),
        ("GET", "/metrics", 200, True),
        ("GET", "/settings/gpu/cards/", 200, True),
        ("GET", "/settings/gpu/apply/progress/", 286, True),
        ("GET", "/settings/gpu/", 200, False),
        ("POST", "/api/system/gpu-config/apply", 202, False),
    ],
)
def test_access_log_is_quiet_for_polls_probes_and_static_files(method, path, status, quiet):
    from ops.logs import is_quiet

    assert is_quiet(method, path, status) is quiet
