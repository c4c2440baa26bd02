"""The Content-Security-Policy header, and the client address behind a trusted proxy."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory

from gpuconfig_site.lockout import client_address

pytestmark = pytest.mark.django_db


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    out = {}
    for part in header.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


@pytest.mark.parametrize("path", ["/settings/gpu/", "/api/docs/", "/admin/", "/api/system/gpus"])
def test_pages_the_docs_and_the_api_carry_a_content_security_policy(
    staff_user, reference_inventory, path
):
    client = Client()
    client.force_login(staff_user)
    res = client.get(path)
    assert res.status_code == 200
    policy = _policy(res)
    assert policy["script-src"] == ["'self'"]  # no inline or foreign script runs
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]


def test_the_api_docs_load_their_script_from_the_site_not_inline(staff_user):
    client = Client()
    client.force_login(staff_user)
    page = client.get("/api/docs/").content.decode()
    assert "<script>" not in page  # an inline script would be blocked by script-src 'self'
    assert 'src="/api/docs/?script' in page
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()


def _request(remote: str, forwarded: str | None = None):
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **meta)


def test_without_trusted_proxies_the_client_is_the_peer_whatever_it_forwards(settings):
    settings.GPUCONFIG_TRUSTED_PROXIES = []
    assert client_address(_request("10.0.0.5", "203.0.113.9")) == "10.0.0.5"


def test_behind_a_trusted_proxy_the_client_is_the_address_the_proxy_appended(settings):
    settings.GPUCONFIG_TRUSTED_PROXIES = ["10.0.0.0/24"]
    # The client sent a made-up X-Forwarded-For; the proxy appended the real peer.
    assert client_address(_request("10.0.0.5", "1.2.3.4, 203.0.113.9")) == "203.0.113.9"
    assert client_address(_request("10.0.0.5", "203.0.113.9, 10.0.0.7")) == "203.0.113.9"
    assert client_address(_request("10.0.0.5", "not-an-address")) == "10.0.0.5"
    # A peer that is not the proxy is believed for nothing it forwards.
    assert client_address(_request("198.51.100.1", "203.0.113.9")) == "198.51.100.1"


def test_behind_a_trusted_proxy_wrong_keys_lock_out_the_client_not_the_proxy(settings):
    from tests.conftest import API_KEY

    settings.GPUCONFIG_TRUSTED_PROXIES = ["127.0.0.1"]
    settings.AXES_FAILURE_LIMIT = 3
    url = "/api/system/gpu-config"
    guesser = Client(headers={"X-API-Key": "guess", "X-Forwarded-For": "203.0.113.9"})
    assert [guesser.get(url).status_code for _ in range(3)] == [401, 401, 429]
    other = Client(headers={"X-API-Key": API_KEY, "X-Forwarded-For": "203.0.113.10"})
    assert other.get(url).status_code == 200
