"""Writes for API keys: create one (the key is returned once), revoke, and mark use."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from apikeys.models import ApiKey

LAST_USED_RESOLUTION = timedelta(seconds=60)
"""A key's last-used time is written at most once a minute, not on every request."""


def api_key_create(*, name: str) -> tuple[ApiKey, str]:
    """A new key named ``name``; returns the row and the key, which is not stored."""
    return ApiKey.objects.create_key(name=name)


def api_key_touch(*, api_key: ApiKey) -> None:
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
