"""The Django admin: every model registered, the catalog editable, history read-only."""

from __future__ import annotations

import pytest
import yaml
from django.contrib import admin
from django.urls import reverse

from applies.models import ApplyRun
from assignments.models import AiService, Assignment, ConfigVersion, GpuConfig
from gpus.models import Gpu, GpuProcess, GpuSample, ServiceVramSample

pytestmark = pytest.mark.django_db


# The catalog's change form has the hosted models' inline: a post carries its management form.
NO_PARTS = {
    "parts-TOTAL_FORMS": "0",
    "parts-INITIAL_FORMS": "0",
    "parts-MIN_NUM_FORMS": "0",
    "parts-MAX_NUM_FORMS": "1000",
}


@pytest.fixture
def admin_client_logged(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "", "pw-root-123")
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "model",
    [
        Gpu,
        GpuSample,
        GpuProcess,
        ServiceVramSample,
        AiService,
        GpuConfig,
        Assignment,
        ConfigVersion,
        ApplyRun,
    ],
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
        **NO_PARTS,
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
        **NO_PARTS,
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


def _gpu_change(client, gpu, available: bool):
    url = reverse("admin:gpus_gpu_change", args=[gpu.pk])
    return client.post(url, {"available": "on"} if available else {})


def test_marking_a_gpu_lost_in_the_admin_falls_back_records_and_rewrites(
    admin_client_logged, reference_inventory, django_capture_on_commit_callbacks, settings
):
    from tests.conftest import config_files

    small = Gpu.objects.get(index=1)
    on_small = sorted(
        Assignment.objects.filter(gpu_uuid=small.uuid).values_list("service__name", flat=True)
    )
    assert on_small
    versions = ConfigVersion.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        res = _gpu_change(admin_client_logged, small, available=False)
    assert res.status_code == 302, res.content[:2000]
    small.refresh_from_db()
    assert small.available is False
    assert ConfigVersion.objects.count() == versions + 1
    assert ConfigVersion.objects.first().source == ConfigVersion.Source.FALLBACK
    fallen = Assignment.objects.filter(service__name__in=on_small)
    assert all(a.is_falling_back and a.fallback_gpu_index == 0 for a in fallen)
    reference = config_files(settings)["gpu-assignments.yml"]
    assert "is unavailable; falling back" in reference

    with django_capture_on_commit_callbacks(execute=True):
        assert _gpu_change(admin_client_logged, small, available=True).status_code == 302
    assert not any(a.is_falling_back for a in Assignment.objects.filter(service__name__in=on_small))
    assert ConfigVersion.objects.first().source == ConfigVersion.Source.RESTORE


def test_re_enabling_a_lost_gpu_whose_index_is_taken_is_a_form_error(
    admin_client_logged, reference_inventory
):
    from gpus.backends.base import GpuReading
    from gpus.services import gpu_inventory_sync

    small = Gpu.objects.get(index=1)
    # The A400 is gone and another card now answers at index 1.
    big = Gpu.objects.get(index=0)
    gpu_inventory_sync(
        readings=[
            GpuReading(
                index=0,
                uuid=big.uuid,
                name=big.name,
                vram_total_mb=24564,
                vram_used_mb=0,
                compute_capability=(8, 6),
            ),
            GpuReading(
                index=1,
                uuid="GPU-newcomer",
                name="NVIDIA T4",
                vram_total_mb=15360,
                vram_used_mb=0,
                compute_capability=(7, 5),
            ),
        ]
    )
    small.refresh_from_db()
    assert small.available is False
    res = _gpu_change(admin_client_logged, small, available=True)
    assert res.status_code == 200
    assert "GPU 1 is another card now (NVIDIA T4" in res.content.decode()
    small.refresh_from_db()
    assert small.available is False


def test_a_strategy_change_in_the_admin_is_saved_planned_recorded_and_written(
    admin_client_logged, reference_inventory, django_capture_on_commit_callbacks, settings
):
    from tests.conftest import config_files

    config = GpuConfig.load()
    versions = ConfigVersion.objects.count()
    url = reverse("admin:assignments_gpuconfig_change", args=[config.pk])
    with django_capture_on_commit_callbacks(execute=True):
        res = admin_client_logged.post(url, {"strategy": "isolation_first"})
    assert res.status_code == 302, res.content[:2000]
    assert GpuConfig.load().strategy == "isolation_first"
    assert ConfigVersion.objects.count() == versions + 1
    latest = ConfigVersion.objects.first()
    assert (latest.strategy, latest.actor) == ("isolation_first", "root")
    assert "strategy: isolation_first" in config_files(settings)["gpu-assignments.yml"]
    # Planned as the API would plan it.
    from assignments.selectors import config_preview

    plan, _ = config_preview(strategy="isolation_first")
    saved = dict(Assignment.objects.values_list("service__name", "gpu_index"))
    assert {p.service: p.gpu_index for p in plan.placements} == {
        name: saved[name] for name in saved if name in {p.service for p in plan.placements}
    }


def test_catalog_edits_in_the_admin_are_recorded_replanned_and_written(
    admin_client_logged, reference_inventory, django_capture_on_commit_callbacks, settings
):
    from assignments.selectors import config_preview
    from assignments.services import config_save
    from tests.conftest import config_files

    config_save(strategy="vram_based")  # an automatic strategy: catalog edits re-plan
    planned = Assignment.objects.get(service__name="ai-clip").gpu_index
    # A hand-made deviation from the plan, which a re-plan undoes.
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 1 - planned}])
    svc = AiService.objects.get(name="ai-clip")
    versions = ConfigVersion.objects.count()
    url = reverse("admin:assignments_aiservice_change", args=[svc.pk])
    data = {
        "name": "ai-clip",
        "display_name": svc.display_name,
        "model_name": svc.model_name,
        "description": svc.description,
        "vram_required_mb": 1500,
        "default_budget_gb": "",
        "enabled": "on",
        "sort_order": svc.sort_order,
        **NO_PARTS,
    }
    with django_capture_on_commit_callbacks(execute=True):
        res = admin_client_logged.post(url, data)
    assert res.status_code == 302, res.content[:2000]
    assert ConfigVersion.objects.count() == versions + 1
    assert ConfigVersion.objects.first().source == ConfigVersion.Source.CATALOG
    plan, _ = config_preview(strategy="vram_based")
    saved = dict(Assignment.objects.values_list("service__name", "gpu_index"))
    assert {p.service: p.gpu_index for p in plan.placements}.items() <= saved.items()
    # The file was rewritten with the new plan.
    written = yaml.safe_load(config_files(settings)["gpu-assignments.yml"])
    assert {name: a["gpu"] for name, a in written["assignments"].items()} == saved

    data.pop("enabled")  # disabled: leaves the plan and the files
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client_logged.post(url, data).status_code == 302
    assert ConfigVersion.objects.count() == versions + 2
    assert "ai-clip" not in config_files(settings)["docker-compose.gpu-override.yml"]


def test_editing_only_a_catalog_entrys_text_in_the_admin_is_saved_without_a_version(
    admin_client_logged, reference_inventory
):
    """Display name, model name and description change no plan: they are saved all the same,
    and no ConfigVersion is recorded for them."""
    from assignments.services import config_save

    config_save(strategy="manual")  # the saved assignments stay as they are: nothing re-plans
    svc = AiService.objects.get(name="ai-clip")
    versions = ConfigVersion.objects.count()
    url = reverse("admin:assignments_aiservice_change", args=[svc.pk])
    data = {
        **NO_PARTS,
        "name": "ai-clip",
        "display_name": "CLIP (renamed)",
        "model_name": "CLIP ViT-L/14 renamed",
        "description": "A new description.",
        "vram_required_mb": svc.vram_required_mb,
        "default_budget_gb": "" if svc.default_budget_gb is None else svc.default_budget_gb,
        "min_budget_gb": "" if svc.min_budget_gb is None else svc.min_budget_gb,
        "enabled": "on",
        "sort_order": svc.sort_order,
    }
    if svc.latency_critical:
        data["latency_critical"] = "on"
    if svc.isolated:
        data["isolated"] = "on"
    res = admin_client_logged.post(url, data)
    assert res.status_code == 302, res.content[:2000]
    svc.refresh_from_db()
    assert (svc.display_name, svc.model_name, svc.description) == (
        "CLIP (renamed)",
        "CLIP ViT-L/14 renamed",
        "A new description.",
    )
    assert ConfigVersion.objects.count() == versions
