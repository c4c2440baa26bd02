from django.contrib import admin

from assignments.models import AiService, ApplyRun, Assignment, ConfigVersion, GpuConfig


@admin.register(AiService)
class AiServiceAdmin(admin.ModelAdmin):
    """The catalog: VRAM estimates, strategy flags and default budgets are edited here."""

    list_display = ["name", "display_name", "vram_required_mb", "latency_critical", "isolated",
                    "budget_adjustable", "default_budget_gb", "enabled", "sort_order"]
    list_editable = ["vram_required_mb", "latency_critical", "isolated", "default_budget_gb", "enabled"]
    search_fields = ["name", "display_name", "model_name"]


@admin.register(GpuConfig)
class GpuConfigAdmin(admin.ModelAdmin):
    list_display = ["strategy", "updated_at", "updated_by"]
    readonly_fields = ["updated_at", "updated_by"]

    def has_add_permission(self, request):
        return not GpuConfig.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    """Overrides of single assignments. Saving here does not rewrite the generated files until
    the next save or apply; the GPU Configuration page validates and writes them at once."""

    list_display = ["service", "gpu_index", "gpu_uuid", "vram_budget_override", "fallback_gpu_index",
                    "fallback_reason", "updated_at"]
    list_select_related = ["service"]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ConfigVersion)
class ConfigVersionAdmin(ReadOnlyAdmin):
    """History: every save and automatic fallback, never edited."""

    list_display = ["pk", "created_at", "actor", "source", "strategy"]
    list_filter = ["source", "strategy"]


@admin.register(ApplyRun)
class ApplyRunAdmin(ReadOnlyAdmin):
    list_display = ["operation_id", "status", "created_at", "finished_at", "actor"]
    list_filter = ["status"]
