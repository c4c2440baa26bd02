"""Reads for API keys."""

from __future__ import annotations

from apikeys.models import ApiKey


def api_key_find(*, key: str) -> ApiKey | None:
    """The usable (not revoked, not expired) key matching ``key``, or None."""
    try:
        api_key = ApiKey.objects.get_from_key(key)
    except ApiKey.DoesNotExist:
        return None
    return None if api_key.has_expired else api_key
