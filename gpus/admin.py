from django import forms
from django.contrib import admin
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.core.exceptions import ValidationError

from gpuconfig_site.admin_saves import ServiceSavedAdmin
from gpus.models import Gpu, GpuProcess, GpuSample, ServiceVramSample
from gpus.selectors import gpu_index_holder, index_taken_detail
from gpus.services import gpu_availability_set


class GpuForm(forms.ModelForm):
    """Only ``available`` may change; re-enabling a card whose index another present card holds
    is refused here, as a form error."""

    class Meta:
        model = Gpu
        fields = ["available"]

    def clean_available(self):
        available = self.cleaned_data["available"]
        holder = gpu_index_holder(gpu=self.instance) if available else None
        if holder is not None:
            raise ValidationError(index_taken_detail(gpu=self.instance, holder=holder))
        return available


@admin.register(Gpu)
class GpuAdmin(ServiceSavedAdmin):
    """The inventory is written by scans; the admin shows it and may mark a card lost or back,
    which goes through the inventory service (fallbacks, a ConfigVersion, the files)."""

    form = GpuForm
    # The UUID (40 characters) is on the change page and searchable; the list fits 1366 px.
    list_display = [
        "index",
        "name",
        "vram",
        "compute_capability",
        "available",
        "seen",
    ]
    list_filter = ["available", "backend"]
    search_fields = ["name", "uuid", "pci_bus_id"]
    readonly_fields = [f.name for f in Gpu._meta.fields if f.name != "available"]

    def has_add_permission(self, request):
        return False  # scans add GPUs

    def save_model(self, request, obj, form, change):
        gpu_availability_set(gpu=obj, available=form.cleaned_data["available"])
        obj.refresh_from_db()

    @admin.display(description="VRAM used / total (MB)", ordering="vram_total_mb")
    def vram(self, obj: Gpu) -> str:
        used = "–" if obj.vram_used_mb is None else obj.vram_used_mb
        total = "–" if obj.vram_total_mb is None else obj.vram_total_mb
        return f"{used} / {total}"

    @admin.display(description="last seen", ordering="last_seen")
    def seen(self, obj: Gpu) -> str:
        return naturaltime(obj.last_seen) if obj.last_seen else "–"


@admin.register(GpuSample)
class GpuSampleAdmin(admin.ModelAdmin):
    list_display = ["gpu", "taken_at", "utilization_percent", "vram_used_mb"]
    list_filter = ["gpu"]
    date_hierarchy = "taken_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(GpuProcess)
class GpuProcessAdmin(admin.ModelAdmin):
    """The processes of the last scan, read-only: each scan replaces them."""

    list_display = ["gpu", "pid", "name", "used_mb", "service", "container_name", "kind"]
    list_filter = ["gpu", "service", "kind"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ServiceVramSample)
class ServiceVramSampleAdmin(admin.ModelAdmin):
    """Measured VRAM per service and GPU, read-only: written by scans, pruned by them."""

    list_display = ["service", "gpu_uuid", "used_mb", "taken_at"]
    list_filter = ["service"]
    date_hierarchy = "taken_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
