"""Rules in the Django admin: listed, added through the rules service, and checked as the API
checks them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from assignments.models import AiService, ServiceRule
from tests.conftest import reference_uuid

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "", "pw-root-123")
    client.force_login(user)
    return client


def test_a_rule_added_in_the_admin_is_saved_with_its_pin_and_pairs(
    admin_client_logged, reference_inventory
):
    clip, yolo = AiService.objects.get(name="ai-clip"), AiService.objects.get(name="ai-yolo26")
    response = admin_client_logged.post(
        reverse("admin:assignments_servicerule_add"),
        {
            "service": clip.pk,
            "pin_gpu_uuid": reference_uuid(1),
            "exclusive": "",
            "never_with": [yolo.pk],
            "priority": 4,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    rule = ServiceRule.objects.get(service=clip)
    assert (rule.pin_gpu_uuid, rule.priority) == (reference_uuid(1), 4)
    assert list(rule.never_with.values_list("name", flat=True)) == ["ai-yolo26"]
    listing = admin_client_logged.get(reverse("admin:assignments_servicerule_changelist"))
    assert listing.status_code == 200 and b"ai-clip" in listing.content


def test_a_rule_that_keeps_a_service_from_itself_is_a_form_error(
    admin_client_logged, reference_inventory
):
    clip = AiService.objects.get(name="ai-clip")
    response = admin_client_logged.post(
        reverse("admin:assignments_servicerule_add"),
        {"service": clip.pk, "pin_gpu_uuid": "", "never_with": [clip.pk], "priority": 0},
    )
    assert response.status_code == 200
    assert "cannot be kept apart from itself" in response.content.decode()
    assert not ServiceRule.objects.exists()
