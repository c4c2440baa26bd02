"""API authentication: a session (the page, the browsable API) or the ``X-API-Key`` header."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions


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


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Accepts ``X-API-Key`` when it matches ``GPUCONFIG_API_KEY`` or a named key of the admin
    (``apikeys.ApiKey``: not revoked, not expired). Any other key is refused with "Invalid API
    key."; a request without the header goes on to the session."""

    header = "HTTP_X_API_KEY"
    keyword = "X-API-Key"

    def authenticate(self, request):
        from apikeys.selectors import api_key_find
        from apikeys.services import api_key_touch

        supplied = request.META.get(self.header)
        if supplied is None:
            return None
        supplied = supplied.strip()
        expected = (settings.GPUCONFIG_API_KEY or "").strip()
        if expected and hmac.compare_digest(supplied.encode(), expected.encode()):
            return (ApiKeyUser(), "api-key")
        named = api_key_find(key=supplied) if supplied else None
        if named is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        api_key_touch(api_key=named)
        return (ApiKeyUser(name=named.name), named)

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
