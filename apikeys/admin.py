from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from apikeys.models import ApiKey

# The library's own concrete model is not used: keys live in ``apikeys.ApiKey``.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    """Create a key (shown once, in the confirmation message), revoke it, see when it was used."""

    list_display = ("name", "prefix", "created", "last_used_at", "expiry_date", "revoked")
    list_filter = ("revoked", "created")
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return (*super().get_readonly_fields(request, obj), "created", "last_used_at")

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked=False).update(revoked=True)
        self.message_user(request, f"Revoked {count} API key{'s' if count != 1 else ''}.")
