"""The Django admin: every model registered, the catalog editable, history read-only."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from assignments.models import AiService, ApplyRun, Assignment, ConfigVersion, GpuConfig
from gpus.models import Gpu, GpuSample

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "", "pw-root-123")
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "model", [Gpu, GpuSample, AiService, GpuConfig, Assignment, ConfigVersion, ApplyRun]
)
def test_every_model_is_registered_and_its_list_loads(
    admin_client_logged, reference_inventory, model
):
    assert admin.site.is_registered(model)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    assert admin_client_logged.get(url).status_code == 200


def test_the_catalog_is_editable(admin_client_logged):
    svc = AiService.objects.get(name="ai-clip")
    url = reverse("admin:assignments_aiservice_change", args=[svc.pk])
    page = admin_client_logged.get(url)
    assert page.status_code == 200
    data = {
        "name": "ai-clip",
        "display_name": "CLIP",
        "model_name": "CLIP ViT-H",
        "description": "",
        "vram_required_mb": 2048,
        "latency_critical": "on",
        "default_budget_gb": "",
        "enabled": "on",
        "sort_order": 3,
    }
    res = admin_client_logged.post(url, data)
    assert res.status_code == 302, res.content[:2000]
    svc.refresh_from_db()
    assert (svc.vram_required_mb, svc.latency_critical, svc.model_name) == (
        2048,
        True,
        "CLIP ViT-H",
    )


def test_a_budget_adjustable_service_needs_a_default_budget(admin_client_logged):
    svc = AiService.objects.get(name="ai-clip")
    url = reverse("admin:assignments_aiservice_change", args=[svc.pk])
    data = {
        "name": "ai-clip",
        "display_name": "CLIP",
        "vram_required_mb": 1229,
        "budget_adjustable": "on",
        "default_budget_gb": "",
        "enabled": "on",
        "sort_order": 3,
    }
    res = admin_client_logged.post(url, data)
    assert res.status_code == 200
    assert "needs a default budget" in res.content.decode()


def test_config_versions_are_read_only(admin_client_logged, reference_inventory):
    version = ConfigVersion.objects.get()
    url = reverse("admin:assignments_configversion_change", args=[version.pk])
    page = admin_client_logged.get(url).content.decode()
    assert 'name="_save"' not in page
    res = admin_client_logged.post(url, {"strategy": "balanced"})
    assert res.status_code == 403
    version.refresh_from_db()
    assert version.strategy != "balanced"
    delete = reverse("admin:assignments_configversion_delete", args=[version.pk])
    assert admin_client_logged.post(delete, {"post": "yes"}).status_code == 403
    assert (
        admin_client_logged.get(reverse("admin:assignments_configversion_add")).status_code == 403
    )


def test_an_override_in_the_admin_is_validated_recorded_and_written(
    admin_client_logged, reference_inventory, django_capture_on_commit_callbacks, settings
):
    import yaml

    from tests.conftest import config_files

    assignment = Assignment.objects.get(service__name="ai-enrichment")
    url = reverse("admin:assignments_assignment_change", args=[assignment.pk])
    res = admin_client_logged.post(url, {"gpu_index": 1, "vram_budget_override": 0})
    assert res.status_code == 200
    assert "greater than 0" in res.content.decode()
    assignment.refresh_from_db()
    assert assignment.vram_budget_override is None

    with django_capture_on_commit_callbacks(execute=True):
        res = admin_client_logged.post(url, {"gpu_index": 1, "vram_budget_override": 3.5})
    assert res.status_code == 302
    assignment.refresh_from_db()
    assert (assignment.gpu_index, assignment.vram_budget_override) == (1, 3.5)
    assert ConfigVersion.objects.first().actor == "root"
    override = yaml.safe_load(config_files(settings)["docker-compose.gpu-override.yml"])
    assert override["services"]["ai-enrichment"]["environment"] == ["VRAM_BUDGET_GB=3.5"]
