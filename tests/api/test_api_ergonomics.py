"""API items for scripts: local docs, the key in the schema, named keys, structured warnings,
PUT answering with the saved assignments, GPU history pages, and health as a string."""

from __future__ import annotations

import os
import stat

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from apikeys.models import ApiKey
from apikeys.services import api_key_create
from tests.conftest import API_KEY

pytestmark = pytest.mark.django_db

DETAIL_FIELDS = {
    "code",
    "severity",
    "service",
    "gpu_index",
    "needed_mb",
    "available_mb",
    "suggested_budget_gb",
    "message",
}


def test_api_docs_load_swagger_ui_from_this_server(staff_client):
    body = staff_client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in body
    assert "cdn.jsdelivr.net" not in body and "unpkg.com" not in body


def test_the_schema_documents_the_api_key_header(staff_client):
    schema = staff_client.get("/api/schema/?format=json").json()
    scheme = schema["components"]["securitySchemes"]["ApiKeyAuth"]
    assert scheme == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": scheme["description"],
    }
    assert {"ApiKeyAuth": []} in schema["paths"]["/api/system/gpu-config"]["get"]["security"]


@pytest.mark.parametrize("configured", [API_KEY, None])
def test_a_wrong_key_is_refused_as_invalid(settings, reference_inventory, configured):
    settings.GPUCONFIG_API_KEY = configured
    response = APIClient(headers={"X-API-Key": "wrong"}).get("/api/system/gpu-config")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API key."}


def test_a_named_key_reads_and_writes_and_records_its_use(settings, reference_inventory):
    settings.GPUCONFIG_API_KEY = None
    row, key = api_key_create(name="hsi")
    assert key not in row.hashed_key and row.hashed_key.startswith("sha512$$")
    client = APIClient(headers={"X-API-Key": key})
    before = timezone.now()
    assert client.get("/api/system/gpu-config").status_code == 200
    response = client.put("/api/system/gpu-config", {"strategy": "balanced"}, format="json")
    assert response.status_code == 200
    row.refresh_from_db()
    assert before <= row.last_used_at <= timezone.now()


def test_a_revoked_key_is_refused(reference_inventory):
    row, key = api_key_create(name="old")
    row.revoked = True
    row.save()
    response = APIClient(headers={"X-API-Key": key}).get("/api/system/gpu-config")
    assert response.json() == {"detail": "Invalid API key."}


def test_admin_manages_named_keys(admin_client):
    response = admin_client.post("/admin/apikeys/apikey/add/", {"name": "grafana"}, follow=True)
    assert response.status_code == 200
    row = ApiKey.objects.get(name="grafana")
    assert "The API key for grafana is:" in response.content.decode()
    page = admin_client.get("/admin/apikeys/apikey/").content.decode()
    assert "grafana" in page and "Last used" in page
    admin_client.post(
        "/admin/apikeys/apikey/",
        {"action": "revoke", "_selected_action": [row.pk]},
        follow=True,
    )
    row.refresh_from_db()
    assert row.revoked


def test_first_run_key_is_written_once_to_an_owner_only_file(tmp_path):
    path = tmp_path / "var" / "api-key"
    call_command("create_api_key", "first-run", "--file", str(path), "--if-none")
    key = path.read_text().strip()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ApiKey.objects.get_from_key(key).name == "first-run"
    call_command("create_api_key", "first-run", "--file", str(path), "--if-none")
    assert path.read_text().strip() == key
    assert ApiKey.objects.filter(name="first-run").count() == 1


def test_warnings_come_with_structured_details(key_client, reference_inventory):
    # ai-enrichment on the 4 GB GPU with its default 6.8 GB budget.
    key_client.put(
        "/api/system/gpu-config",
        {"assignments": [{"service": "ai-enrichment", "gpu_index": 1}]},
        format="json",
    )
    body = key_client.get("/api/system/gpu-config").json()
    assert len(body["warning_details"]) == len(body["warnings"])
    assert [d["message"] for d in body["warning_details"]] == body["warnings"]
    for detail in body["warning_details"]:
        assert set(detail) == DETAIL_FIELDS
    # One warning per problem: the 4 GB GPU's over-commit names the service and its fix.
    over = next(d for d in body["warning_details"] if d["gpu_index"] == 1)
    assert over["code"] == "over_capacity" and over["severity"] == "warning"
    assert over["service"] == "ai-enrichment"
    assert over["suggested_budget_gb"] == 3.5
    assert over["needed_mb"] == round(6.8 * 1024)
    assert over["available_mb"] < over["needed_mb"]

    preview = key_client.get("/api/system/gpu-config/preview?strategy=balanced").json()
    assert [d["message"] for d in preview["warning_details"]] == preview["warnings"]


def test_put_answers_with_the_saved_assignments(key_client, reference_inventory):
    response = key_client.put(
        "/api/system/gpu-config",
        {
            "strategy": "manual",
            "assignments": [
                {"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 3.5}
            ],
        },
        format="json",
    )
    body = response.json()
    assert body["success"] is True and body["strategy"] == "manual"
    saved = {a["service"]: a for a in body["assignments"]}
    assert saved["ai-enrichment"] == {
        "service": "ai-enrichment",
        "gpu_index": 1,
        "vram_budget_override": 3.5,
    }
    assert body["assignments"] == key_client.get("/api/system/gpu-config").json()["assignments"]
    assert {"warnings", "warning_details", "version", "updated_at"} <= set(body)


def test_gpus_say_which_backend_and_that_they_are_simulated(key_client, reference_inventory):
    body = key_client.get("/api/system/gpus").json()
    assert body["backend"] == "simulated" and body["simulated"] is True


def test_gpus_on_real_hardware_are_not_called_simulated(key_client, db, settings):
    settings.GPUCONFIG_GPU_BACKEND = "nvml"
    body = key_client.get("/api/system/gpus").json()
    assert body["backend"] == "nvml" and body["simulated"] is False


def test_gpu_history_pages_samples_newest_first(key_client, reference_inventory):
    from gpus.services import gpu_scan_run

    for _ in range(3):
        gpu_scan_run()
    first = key_client.get("/api/system/gpu/history?limit=4").json()
    assert set(first) == {"items", "pagination"}
    assert first["pagination"] == {
        "total": first["pagination"]["total"],
        "limit": 4,
        "offset": 0,
        "has_more": True,
    }
    assert first["pagination"]["total"] >= 6
    times = [i["recorded_at"] for i in first["items"]]
    assert times == sorted(times, reverse=True) and len(times) == 4
    item = first["items"][0]
    assert set(item) == {
        "recorded_at",
        "gpu_index",
        "gpu_uuid",
        "gpu_name",
        "gpu_utilization",
        "memory_used",
        "memory_total",
    }
    total = first["pagination"]["total"]
    last = key_client.get(f"/api/system/gpu/history?limit=4&offset={total - 2}").json()
    assert len(last["items"]) == 2 and last["pagination"]["has_more"] is False


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=100000", "offset=-1"])
def test_gpu_history_refuses_bad_paging(key_client, db, query):
    response = key_client.get(f"/api/system/gpu/history?{query}")
    assert response.status_code == 400 and "must be a whole number" in response.json()["detail"]


def test_service_health_is_always_a_string(key_client, reference_inventory, monkeypatch, settings):
    settings.GPUCONFIG_CONTAINER_RUNTIME = "docker"
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/gpuconfig-test.sock")
    services = key_client.get("/api/system/gpu-config/services").json()["services"]
    assert len(services) == 5
    for service in services:
        assert service["health"] == "unknown" and service["status"] == "unknown"
        assert service["runtime"] == "docker"
