"""API authentication: a session (the page, the browsable API) or the ``X-API-Key`` header."""

from __future__ import annotations

import hmac

from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

KEY_CREDENTIALS = {"username": "api-key"}
LOCKED_OUT = "Too many failed sign-ins or wrong API keys from this address; try again later."


class ApiKeyUser(AnonymousUser):
    """The identity of a request carrying the configured API key: may read and change."""

    username = "api-key"

    def __init__(self, name: str = ""):
        super().__init__()
        if name:
            self.username = f"api-key:{name}"

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    @property
    def is_anonymous(self) -> bool:  # type: ignore[override]
        return False

    is_staff = True

    def __str__(self) -> str:
        return self.username


class KeyLockedOut(Exception):
    """The address is locked out (django-axes) and the key is not a valid named key."""


class KeyInvalid(Exception):
    """The key matches neither ``GPUCONFIG_API_KEY`` nor a usable named key (counted)."""


def api_key_identify(request: HttpRequest, supplied: str) -> tuple[ApiKeyUser, object]:
    """Who an API key is, for every place that takes one (the API, ``/readyz``, ``/metrics``).

    A wrong key counts as a failed sign-in for django-axes (``KeyInvalid``). From an address
    locked out, ``GPUCONFIG_API_KEY`` is not even compared (``KeyLockedOut``): it is chosen by
    a person and may be guessable. A valid named key still gets through such a lockout (its
    secret is random, 32 characters, out of reach of guessing), so one client's wrong keys do
    not lock out the others behind the same address (a reverse proxy).
    """
    # Imported here: DRF imports this module with the settings, before the models load.
    from apikeys.selectors import api_key_find
    from apikeys.services import api_key_touch

    supplied = supplied.strip()
    locked = AxesProxyHandler.is_locked(request, KEY_CREDENTIALS)
    if not locked:
        expected = (settings.GPUCONFIG_API_KEY or "").strip()
        if expected and hmac.compare_digest(supplied.encode(), expected.encode()):
            return ApiKeyUser(), "api-key"
    named = api_key_find(key=supplied) if supplied else None
    if named is not None:
        api_key_touch(api_key=named)
        return ApiKeyUser(name=named.name), named
    if locked:
        raise KeyLockedOut
    user_login_failed.send(sender=ApiKeyUser, credentials=KEY_CREDENTIALS, request=request)
    raise KeyInvalid


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Accepts ``X-API-Key`` when it matches ``GPUCONFIG_API_KEY`` or a named key of the admin
    (``apikeys.ApiKey``: not revoked, not expired). Any other key is refused with "Invalid API
    key."; a request without the header goes on to the session.

    A wrong key counts as a failed sign-in for django-axes; a locked-out address is refused
    (429) before the configured key is even compared, so guessing stops paying off
    (``api_key_identify``)."""

    header = "HTTP_X_API_KEY"
    keyword = "X-API-Key"

    def authenticate(self, request):
        supplied = request.META.get(self.header)
        if supplied is None:
            return None
        try:
            return api_key_identify(request._request, supplied)
        except KeyLockedOut:
            raise exceptions.Throttled(detail=LOCKED_OUT) from None
        except KeyInvalid:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Documents ``X-API-Key`` in the OpenAPI schema (and the docs' Authorize dialog)."""

    target_class = "gpuconfig_site.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": ApiKeyAuthentication.keyword,
            "description": "GPUCONFIG_API_KEY, or a named key created in the admin (API keys).",
        }


class ReadAuthenticatedWriteStaff(permissions.BasePermission):
    """Any signed-in user (or the key) may read; changes need staff or the key."""

    message = "Changing the GPU configuration needs a staff account or the API key."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if request.method in permissions.SAFE_METHODS:
            return True
        return bool(user.is_staff)


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """django-axes' answer to a locked-out client: JSON under ``/api/``, a page elsewhere."""
    from gpuconfig_site.api import API_PREFIX  # api.py imports DRF, which imports this module

    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": LOCKED_OUT}, status=429)
    return HttpResponse(
        render_to_string("registration/locked_out.html", {"detail": LOCKED_OUT}, request),
        status=429,
    )
