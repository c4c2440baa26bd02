"""The apply runs behind ``/gpu-config/status``, ``/gpu-config/services`` and the page, kept in
the cache (``applies.run_reads``): answered without a query while no run changed, never
stale after a run is created, claimed, finished, beats its heart or is deleted."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.utils import timezone

from applies.models import ApplyRun
from applies.run_reads import runs_state_bump
from applies.selectors import apply_run_latest

pytestmark = pytest.mark.django_db

STATUS = "/api/system/gpu-config/status"
SERVICES = "/api/system/gpu-config/services"


def _status(client) -> dict:
    res = client.get(STATUS)
    assert res.status_code == 200, res.content[:500]
    return res.json()


def test_an_unchanged_state_is_answered_without_a_query(
    reference_inventory, key_client, django_assert_num_queries
):
    ApplyRun.objects.create(
        status=ApplyRun.Status.SUCCEEDED,
        services=["ai-clip"],
        results={"ai-clip": {"outcome": "healthy", "message": ""}},
        finished_at=timezone.now(),
    )
    first = key_client.get(SERVICES).json()
    with django_assert_num_queries(0):
        again = key_client.get(SERVICES).json()
    assert again == first


def test_a_new_run_is_read_at_once(reference_inventory, key_client):
    assert _status(key_client)["operation_id"] is None
    run = ApplyRun.objects.create(services=["ai-clip"])
    assert _status(key_client)["operation_id"] == str(run.operation_id)
    assert _status(key_client)["run_status"] == "queued"


def test_each_state_change_of_a_run_is_read_at_once(reference_inventory, key_client):
    run = ApplyRun.objects.create(services=["ai-clip"])
    assert _status(key_client)["in_progress"] is True
    assert run.claim(worker="test")
    assert _status(key_client)["run_status"] == "running"
    assert run.finish(
        ApplyRun.Status.SUCCEEDED, results={"ai-clip": {"outcome": "healthy", "message": ""}}
    )
    body = _status(key_client)
    assert (body["run_status"], body["in_progress"]) == ("succeeded", False)
    clip = next(s for s in key_client.get(SERVICES).json()["services"] if s["name"] == "ai-clip")
    assert clip["last_apply"] == "healthy"


def test_a_heartbeat_and_a_deletion_are_read_at_once(reference_inventory):
    run = ApplyRun.objects.create(services=["ai-clip"])
    run.claim(worker="test")
    before = apply_run_latest().heartbeat_at
    later = before + timezone.timedelta(seconds=5)
    ApplyRun.objects.filter(pk=run.pk).update(heartbeat_at=later)
    runs_state_bump()  # as the heartbeat thread of a running apply does
    assert apply_run_latest().heartbeat_at == later
    run.delete()
    assert apply_run_latest() is None


def test_a_run_written_in_a_transaction_is_read_once_committed(reference_inventory):
    assert apply_run_latest() is None
    with transaction.atomic():
        run = ApplyRun.objects.create(services=["ai-clip"])
    assert apply_run_latest().pk == run.pk


def test_the_kept_run_loads_its_log_when_read(reference_inventory):
    run = ApplyRun.objects.create(services=["ai-clip"])
    run.finish(ApplyRun.Status.FAILED, error="boom", log="line one\nline two")
    kept = apply_run_latest()
    assert kept.log == "line one\nline two"
    assert kept.error == "boom"


def test_the_pages_history_shows_a_new_version_and_run_at_once(
    staff_user, staff_client, reference_inventory
):
    from django.test import Client

    from front.panels import current_strategy, history

    client = Client()
    client.force_login(staff_user)
    client.get("/settings/gpu/")
    before = history()
    assert current_strategy() != "balanced"
    res = staff_client.put("/api/system/gpu-config", {"strategy": "balanced"}, format="json")
    assert res.status_code == 200
    assert current_strategy() == "balanced"
    assert len(history()["versions"]) == len(before["versions"]) + 1
    run = ApplyRun.objects.create(services=["ai-clip"], actor="history-test")
    assert history()["runs"][0].pk == run.pk
    assert "history-test" in client.get("/settings/gpu/").content.decode()
