from django.contrib import admin

from gpus.models import Gpu, GpuSample


@admin.register(Gpu)
class GpuAdmin(admin.ModelAdmin):
    """The inventory is written by scans; the admin shows it and may hide a lost card."""

    list_display = [
        "index",
        "name",
        "uuid",
        "vram_total_mb",
        "vram_used_mb",
        "compute_capability",
        "available",
        "last_seen",
        "backend",
    ]
    list_filter = ["available", "backend"]
    search_fields = ["name", "uuid", "pci_bus_id"]
    readonly_fields = [f.name for f in Gpu._meta.fields if f.name != "available"]


@admin.register(GpuSample)
class GpuSampleAdmin(admin.ModelAdmin):
    list_display = ["gpu", "taken_at", "utilization_percent", "vram_used_mb"]
    list_filter = ["gpu"]
    date_hierarchy = "taken_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
