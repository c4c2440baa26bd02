"""ApplyRun moved from the assignments app to applies on the same table: its content type (and
so its permissions) follows it, also when a migrate run in between made a new one."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType

from applies.models import ApplyRun

MOVE = importlib.import_module("applies.migrations.0002_applyrun_content_type")


def test_the_model_keeps_the_table_the_assignments_app_made():
    assert ApplyRun._meta.app_label == "applies"
    assert ApplyRun._meta.db_table == "assignments_applyrun"
    names = {c.name for c in ApplyRun._meta.constraints}
    assert "applyrun_one_active" in names


@pytest.mark.django_db
def test_the_content_type_and_its_permissions_follow_the_model():
    moved = ContentType.objects.get(app_label="applies", model="applyrun")
    view = Permission.objects.get(content_type=moved, codename="view_applyrun")

    MOVE.backwards(apps, None)  # as the database was before the move
    moved.refresh_from_db()
    assert moved.app_label == "assignments"

    # A migrate run in between made a new, empty content type under the new label.
    fresh = ContentType.objects.create(app_label="applies", model="applyrun")
    MOVE.forwards(apps, None)
    ContentType.objects.clear_cache()

    moved.refresh_from_db()
    view.refresh_from_db()
    assert moved.app_label == "applies"
    assert view.content_type_id == moved.pk
    assert not ContentType.objects.filter(pk=fresh.pk).exists()
    assert ContentType.objects.get_for_model(ApplyRun).pk == moved.pk
