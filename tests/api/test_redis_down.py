"""Redis down: the page still renders, with a banner naming Redis; API calls that need it
answer a JSON 503 naming it, never a 500."""

from __future__ import annotations

import pytest
from django.test import Client

from applies.models import ApplyRun

pytestmark = pytest.mark.django_db

NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def redis_down(settings, reference_inventory, monkeypatch):
    """The reference inventory saved (while Redis answered), a finished apply on record, then
    Redis gone: the cache and the broker point where nothing answers."""
    ApplyRun.objects.create(status=ApplyRun.Status.SUCCEEDED, services=["ai-clip"])
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/gpuconfig-test.sock")
    settings.REDIS_URL = NOWHERE
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": NOWHERE}
    }


def _names_redis(response) -> str:
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    detail = response.json()["detail"]
    assert "Redis at 127.0.0.1:1 is not reachable" in detail
    return detail


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/system/gpu-config/status"),
        ("get", "/api/system/gpu-config/services"),
        ("post", "/api/system/gpu-config/apply"),
        ("post", "/api/system/gpu-config/detect"),
    ],
)
def test_api_calls_that_need_redis_answer_503_naming_it(redis_down, key_client, method, path):
    res = getattr(key_client, method)(path)
    assert res.status_code == 503
    _names_redis(res)


def test_reads_from_the_database_still_answer(redis_down, key_client):
    assert key_client.get("/api/system/gpus").status_code == 200
    assert key_client.get("/api/system/gpu-config").status_code == 200


def test_the_page_renders_with_a_banner_naming_redis(redis_down, staff_user):
    client = Client()
    client.force_login(staff_user)
    res = client.get("/settings/gpu/")
    assert res.status_code == 200
    page = res.content.decode()
    assert "banner-redis-down" in page
    assert "Redis at 127.0.0.1:1 is not reachable" in page
    assert "NVIDIA RTX A5500" in page  # the database parts are shown


def test_page_apply_and_rescan_say_redis_is_down(redis_down, staff_user):
    client = Client(headers={"HX-Request": "true"})
    client.force_login(staff_user)
    apply = client.post("/settings/gpu/apply/")
    assert apply.status_code == 503
    assert "Redis at 127.0.0.1:1 is not reachable" in apply.content.decode()
    rescan = client.post("/settings/gpu/rescan/")
    assert rescan.status_code == 503
    assert "Redis at 127.0.0.1:1 is not reachable" in rescan.content.decode()
