"""API authentication: a session (the page, the browsable API) or the ``X-API-Key`` header."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework import authentication, exceptions, permissions


class ApiKeyUser(AnonymousUser):
    """The identity of a request carrying the configured API key: may read and change."""

    username = "api-key"

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
    """Accepts ``X-API-Key`` when it matches ``GPUCONFIG_API_KEY``; a wrong key is refused.

    With no key configured, key auth is off and the header is ignored.
    """

    header = "HTTP_X_API_KEY"

    def authenticate(self, request):
        supplied = request.META.get(self.header)
        expected = settings.GPUCONFIG_API_KEY
        if supplied is None or not expected:
            return None
        if not hmac.compare_digest(supplied.encode(), expected.encode()):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        return (ApiKeyUser(), "api-key")

    def authenticate_header(self, request) -> str:
        return "X-API-Key"


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
