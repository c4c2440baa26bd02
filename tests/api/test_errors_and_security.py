"""Every answer under /api/ is JSON, whatever goes wrong; the API description needs an account;
failed sign-ins and wrong API keys are throttled."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from assignments.models import ConfigVersion
from tests.conftest import API_KEY

pytestmark = pytest.mark.django_db

URL = "/api/system/gpu-config"


def _detail(response) -> str:
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    body = response.json()
    assert set(body) == {"detail"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body["detail"]


def test_an_unknown_api_path_answers_404_json(key_client):
    res = key_client.get("/api/system/no-such-thing")
    assert res.status_code == 404
    assert "/api/system/no-such-thing" in _detail(res)


def test_a_method_the_endpoint_lacks_answers_405_json(key_client):
    res = key_client.delete(URL)
    assert res.status_code == 405
    _detail(res)


def test_a_body_over_the_limit_answers_413_json_and_saves_nothing(key_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    body = json.dumps({"strategy": "manual", "pad": "x" * (20 * 1024 * 1024)})
    res = key_client.generic("PUT", URL, body, content_type="application/json")
    assert res.status_code == 413
    assert "at most" in _detail(res)
    assert ConfigVersion.objects.count() == 0


def test_deeply_nested_json_is_a_400_not_a_recursion_error(key_client, reference_inventory):
    versions = ConfigVersion.objects.count()
    body = "[" * 100_000 + "]" * 100_000
    res = key_client.generic("PUT", URL, body, content_type="application/json")
    assert res.status_code == 400
    assert "nested too deeply" in _detail(res)
    assert ConfigVersion.objects.count() == versions


def test_an_unexpected_error_under_api_is_a_json_500(key_client, monkeypatch):
    from assignments.api import views

    def broken(**_options):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(views, "config_current", broken)
    client = Client(raise_request_exception=False, headers={"X-API-Key": API_KEY})
    res = client.get(URL)
    assert res.status_code == 500
    assert "ZeroDivisionError" in _detail(res)


def test_a_malformed_body_is_a_json_400(key_client):
    res = key_client.generic("PUT", URL, "{nope", content_type="application/json")
    assert res.status_code == 400
    assert "Malformed JSON" in _detail(res)


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_the_api_description_needs_an_account(anon_client, viewer_client, path):
    assert anon_client.get(path).status_code == 401
    assert viewer_client.get(path).status_code == 200


def test_testserver_is_not_a_default_allowed_host():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "gpuconfig_site" / "settings.py").read_text()
    defaults = text.split('"DJANGO_ALLOWED_HOSTS",', 1)[1].split(")", 1)[0]
    assert "testserver" not in defaults
    assert "127.0.0.1" in defaults


def test_wrong_api_keys_are_locked_out_even_when_the_next_key_is_right(settings, db):
    settings.AXES_FAILURE_LIMIT = 3
    wrong = Client(headers={"X-API-Key": "guess"})
    assert [wrong.get(URL).status_code for _ in range(3)] == [401, 401, 429]
    res = Client(headers={"X-API-Key": API_KEY}).get(URL)
    assert res.status_code == 429
    assert "Too many" in _detail(res)


def test_failed_logins_are_locked_out(settings, staff_user):
    settings.AXES_FAILURE_LIMIT = 3
    client = Client()
    codes = [
        client.post("/accounts/login/", {"username": "staff", "password": "wrong"}).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    res = client.post("/accounts/login/", {"username": "staff", "password": "pw-staff-123"})
    assert res.status_code == 429
    assert "Too many" in res.content.decode()


def test_a_key_from_an_address_that_never_failed_costs_no_lockout_query(db):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = Client(headers={"X-API-Key": API_KEY})
    assert client.get("/api/system/gpus").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/system/gpus").status_code == 200
    assert not [q["sql"] for q in queries if "axes_" in q["sql"]]


def test_a_lockout_outlives_redis_losing_its_data_after_one_more_guess(settings, db):
    from django.core.cache import cache

    settings.AXES_FAILURE_LIMIT = 3
    wrong = Client(headers={"X-API-Key": "guess"})
    assert [wrong.get(URL).status_code for _ in range(3)] == [401, 401, 429]
    cache.clear()  # Redis restarted: it keeps nothing on disk
    assert wrong.get(URL).status_code == 429  # the guess is noted again; the database says locked
    assert Client(headers={"X-API-Key": API_KEY}).get(URL).status_code == 429


def test_wrong_keys_are_locked_out_from_the_database_while_redis_is_down(settings, db):
    nowhere = "redis://127.0.0.1:1/0"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": nowhere}
    }
    settings.AXES_FAILURE_LIMIT = 3
    wrong = Client(headers={"X-API-Key": "guess"})
    assert [wrong.get(URL).status_code for _ in range(3)] == [401, 401, 429]
    assert Client(headers={"X-API-Key": API_KEY}).get(URL).status_code == 429


@pytest.mark.parametrize("path", ["/readyz", "/metrics"])
@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_wrong_keys_on_readyz_and_metrics_count_toward_the_lockout(settings, db, path, header):
    """These endpoints take a key too: guessing there is counted as on the API, and a lockout
    reached there holds on the API."""
    settings.AXES_FAILURE_LIMIT = 3
    settings.GPUCONFIG_METRICS_ALLOW = []
    value = "Bearer guess" if header == "Authorization" else "guess"
    probe = Client(headers={header: value})
    for _ in range(3):
        probe.get(path)
    assert probe.get(path).status_code == 429
    assert Client(headers={"X-API-Key": API_KEY}).get(URL).status_code == 429


def test_a_valid_named_key_gets_through_a_lockout_caused_by_wrong_keys(settings, db):
    """Behind one address (a reverse proxy) one client's wrong keys lock out the address; a
    named key (random, beyond guessing) still works, the configured key does not."""
    from apikeys.services import api_key_create

    _row, named = api_key_create(name="grafana")
    settings.AXES_FAILURE_LIMIT = 3
    wrong = Client(headers={"X-API-Key": "guess"})
    assert [wrong.get(URL).status_code for _ in range(3)] == [401, 401, 429]
    assert wrong.get(URL).status_code == 429
    assert Client(headers={"X-API-Key": named}).get(URL).status_code == 200
    assert Client(headers={"Authorization": f"Bearer {named}"}).get("/metrics").status_code == 200
    assert Client(headers={"X-API-Key": API_KEY}).get(URL).status_code == 429
