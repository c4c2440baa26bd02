"""The fleet in the admin: hosts are registered here or with ``gpuconfig host add``."""

from django.conf import settings
from django.contrib import admin
from django.utils import timezone

from fleet.models import Host


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ("name", "display_name", "state", "last_heartbeat", "agent_version")
    readonly_fields = ("last_heartbeat", "last_heartbeat_sent_at", "agent_version", "created_at")
    search_fields = ("name", "display_name")

    @admin.display(description="State")
    def state(self, host: Host) -> str:
        return host.state_at(timezone.now(), settings.GPUCONFIG_HEARTBEAT_INTERVAL).label
