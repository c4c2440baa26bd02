"""Named API keys for scripts: stored hashed (SHA-512 of a random key), revocable, with the time
each was last used. The key itself is shown once, when it is created."""

from __future__ import annotations

from django.db import models
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager


class ApiKeyManager(BaseAPIKeyManager):
    pass


class ApiKey(AbstractAPIKey):
    """One named key accepted in the ``X-API-Key`` header beside ``GPUCONFIG_API_KEY``."""

    last_used_at = models.DateTimeField("last used", null=True, blank=True, editable=False)

    objects = ApiKeyManager()

    class Meta(AbstractAPIKey.Meta):
        abstract = False
        verbose_name = "API key"
        verbose_name_plural = "API keys"
