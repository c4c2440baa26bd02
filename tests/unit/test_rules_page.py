"""The rules and versions panels of the GPU page through Django's test client: who may change
what, a refused change that changes nothing, and the confirmation before a rollback."""

from __future__ import annotations

import pytest

from assignments.models import ConfigVersion, ServiceRule
from assignments.services import config_save
from tests.conftest import reference_uuid, saved_state

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def staff_page(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def viewer_page(client, plain_user):
    client.force_login(plain_user)
    return client


def form(**rules) -> dict:
    """The rules form with every service at no rule, then ``rules`` (service → fields)."""
    data = {}
    for name in ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment"):
        data[f"priority-{name}"] = "0"
    for name, fields in rules.items():
        data.update({f"{key}-{name}": value for key, value in fields.items()})
    return data


def test_the_page_loads_both_panels_by_their_own_requests(staff_page, reference_inventory):
    page = staff_page.get("/settings/gpu/").content.decode()
    assert 'hx-get="/settings/gpu/rules/"' in page
    assert 'hx-get="/settings/gpu/versions/"' in page
    rules = staff_page.get("/settings/gpu/rules/", **HTMX).content.decode()
    assert 'aria-label="Pin ai-llm to"' in rules
    assert reference_uuid(1) in rules


def test_saving_rules_on_the_page_replaces_them_and_reloads_the_page(
    staff_page, reference_inventory
):
    response = staff_page.post(
        "/settings/gpu/rules/",
        form(
            **{
                "ai-clip": {"pin": reference_uuid(1), "never": "ai-yolo26", "priority": "2"},
                "ai-llm": {"exclusive": "on"},
            }
        ),
        **HTMX,
    )
    assert response.status_code == 200
    assert response["HX-Redirect"].endswith("/settings/gpu/")
    rules = {r.service.name: r for r in ServiceRule.objects.all()}
    assert set(rules) == {"ai-clip", "ai-llm"}
    assert rules["ai-clip"].pin_gpu_uuid == reference_uuid(1)
    assert rules["ai-llm"].exclusive


def test_a_bad_priority_on_the_page_is_refused_and_changes_nothing(staff_page, reference_inventory):
    response = staff_page.post(
        "/settings/gpu/rules/", form(**{"ai-clip": {"priority": "lots"}}), **HTMX
    )
    assert response.status_code == 422  # the page's status for a form shown again with why
    assert "priority must be a whole number" in response.content.decode()
    assert not ServiceRule.objects.exists()


def test_a_viewer_cannot_change_rules_or_roll_back(viewer_page, reference_inventory, settings):
    before = saved_state(settings)
    response = viewer_page.post("/settings/gpu/rules/", form(**{"ai-llm": {"exclusive": "on"}}))
    assert response.status_code == 403
    version = ConfigVersion.objects.first()
    assert viewer_page.post(f"/settings/gpu/versions/{version.pk}/restore/").status_code == 403
    assert not ServiceRule.objects.exists()
    assert saved_state(settings) == before


def test_a_rollback_is_confirmed_with_its_diff_before_it_is_made(
    staff_page, reference_inventory, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        old = config_save(assignments=[{"service": "ai-clip", "gpu_index": 1}]).version
        config_save(assignments=[{"service": "ai-clip", "gpu_index": 0}])
    count = ConfigVersion.objects.count()
    confirm = staff_page.get(f"/settings/gpu/versions/{old.pk}/restore/", **HTMX).content.decode()
    assert f"Roll back to version {old.pk}?" in confirm
    assert "ai-clip" in confirm and "GPU 0" in confirm and "GPU 1" in confirm
    assert ConfigVersion.objects.count() == count  # asking changes nothing
    with django_capture_on_commit_callbacks(execute=True):
        done = staff_page.post(f"/settings/gpu/versions/{old.pk}/restore/", **HTMX)
    assert done.status_code == 200 and "HX-Redirect" in done
    assert ConfigVersion.objects.count() == count + 1
    assert ConfigVersion.objects.first().source == "rollback"
