"""Assignments room, admin: the catalog, the strategy, the assignments and the rules, saved
through the services; the versions, read-only."""

from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from assignments.files.catalog import catalog_offers
from assignments.models import (
    AiService,
    AiServicePart,
    Assignment,
    ConfigVersion,
    GpuConfig,
    ServiceRule,
)
from assignments.selectors import catalog_parts_total
from assignments.services import catalog_service_save, config_save, config_validate
from assignments.services.rules import rule_save, rules_validate
from gpuconfig_site.admin_saves import ServiceSavedAdmin
from gpuconfig_site.errors import ApplicationError
from gpus.models import Gpu


class AiServicePartInline(admin.TabularInline):
    """The models a service hosts (gateway = detector + re-id + threat): its need is their sum."""

    model = AiServicePart
    extra = 1
    fields = ["name", "vram_mb", "sort_order"]


@admin.register(AiService)
class AiServiceAdmin(ServiceSavedAdmin):
    """The catalog: VRAM estimates, strategy flags and default budgets are edited here; a
    service hosting several models lists them as parts, and needs their sum."""

    inlines = [AiServicePartInline]

    list_display = [
        "name",
        "display_name",
        "vram_required_mb",
        "latency_critical",
        "isolated",
        "budget_adjustable",
        "default_budget_gb",
        "enabled",
    ]
    list_editable = [
        "vram_required_mb",
        "latency_critical",
        "isolated",
        "default_budget_gb",
        "enabled",
    ]
    search_fields = ["name", "display_name", "model_name"]

    def save_model(self, request, obj, form, change):
        """Through the catalog service (also for the list's inline edits): re-planned, recorded
        as a ConfigVersion, the files rewritten."""
        catalog_service_save(service=obj, user=request.user)

    def save_related(self, request, form, formsets, change):
        """The parts, then the need they add up to (saved through the catalog service, so the
        plan and the files follow it)."""
        super().save_related(request, form, formsets, change)
        total = catalog_parts_total(service=form.instance)
        if total is not None and total != form.instance.vram_required_mb:
            form.instance.vram_required_mb = total
            catalog_service_save(service=form.instance, user=request.user)
            self.message_user(
                request,
                f"{form.instance.name} needs {total} MB, the sum of the models it hosts.",
                messages.INFO,
            )

    def changelist_view(self, request, extra_context=None):
        """Offers the compose stack's GPU services the catalog lacks, each as a link to the add
        form filled with its VRAM estimate (for the user to confirm)."""

        offers = catalog_offers()
        if offers and request.method == "GET":
            add = reverse("admin:assignments_aiservice_add")

            def query(offer) -> str:
                fields = {"name": offer.name, "display_name": offer.name}
                if offer.vram_gb is not None:
                    fields["vram_required_mb"] = round(offer.vram_gb * 1024)
                if offer.budget_gb is not None:
                    fields |= {"budget_adjustable": "on", "default_budget_gb": offer.budget_gb}
                return f"{add}?{urlencode(fields)}"

            links = format_html_join(
                ", ", '<a href="{}">{}</a>', ((query(o), o.name) for o in offers)
            )
            messages.info(
                request,
                format_html("GPU services of the compose stack not in the catalog: {}.", links),
            )
        return super().changelist_view(request, extra_context)


@admin.register(GpuConfig)
class GpuConfigAdmin(ServiceSavedAdmin):
    """The strategy; a change goes through the save service, as on the page and the API."""

    list_display = ["strategy", "updated_at", "updated_by"]
    readonly_fields = ["updated_at", "updated_by"]

    def save_model(self, request, obj, form, change):
        config_save(strategy=obj.strategy, user=request.user)
        obj.refresh_from_db()

    def has_add_permission(self, request):
        return not GpuConfig.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False


class AssignmentForm(forms.ModelForm):
    """An override of one service's GPU or budget, checked exactly as the API checks it."""

    class Meta:
        model = Assignment
        fields = ["service", "gpu_index", "vram_budget_override"]

    def _service(self):
        service = self.cleaned_data.get("service")
        if service is None and self.instance.pk:
            service = self.instance.service  # read-only on change
        return service

    def as_change(self) -> dict:
        data = self.cleaned_data
        return {
            "service": self._service().name,
            "gpu_index": data.get("gpu_index"),
            "vram_budget_override": data.get("vram_budget_override"),
        }

    def clean(self):
        cleaned = super().clean()
        if self.errors or self._service() is None:
            return cleaned
        try:
            config_validate(assignments=[self.as_change()])
        except ApplicationError as exc:
            raise ValidationError(exc.message) from exc
        return cleaned


@admin.register(Assignment)
class AssignmentAdmin(ServiceSavedAdmin):
    """Overrides of single assignments. A save goes through the same service as the page and
    the API: validated, recorded as a ConfigVersion, and the generated files rewritten."""

    form = AssignmentForm
    list_display = [
        "service",
        "gpu_index",
        "gpu_uuid",
        "vram_budget_override",
        "fallback_gpu_index",
        "fallback_since",
        "updated_at",
    ]
    list_select_related = ["service"]
    readonly_fields = [
        "gpu_uuid",
        "fallback_gpu_index",
        "fallback_gpu_uuid",
        "lost_gpu_uuid",
        "fallback_since",
        "updated_at",
    ]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "service"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):
        config_save(assignments=[form.as_change()], user=request.user)
        saved = Assignment.objects.get(service__name=form.as_change()["service"])
        obj.pk = saved.pk
        obj.refresh_from_db()


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

    list_display = ["pk", "host", "created_at", "actor", "source", "strategy"]
    list_filter = ["host", "source", "strategy"]


class ServiceRuleForm(forms.ModelForm):
    """One service's rule, checked exactly as the API checks it; the pin is chosen among the
    GPUs gpuconfig knows (by UUID)."""

    pin_gpu_uuid = forms.ChoiceField(label="pinned to GPU", required=False)

    class Meta:
        model = ServiceRule
        fields = ["service", "pin_gpu_uuid", "exclusive", "never_with", "priority"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["pin_gpu_uuid"].choices = [("", "No pin")] + [
            (g.uuid, f"GPU {g.index}: {g.name} ({g.uuid})") for g in Gpu.objects.order_by("index")
        ]

    def as_rule(self) -> dict:
        data = self.cleaned_data
        return {
            "service": data["service"].name,
            "pin_gpu_uuid": data.get("pin_gpu_uuid") or None,
            "exclusive": bool(data.get("exclusive")),
            "never_with": sorted(s.name for s in data.get("never_with") or []),
            "priority": data.get("priority") or 0,
        }

    def clean(self):
        cleaned = super().clean()
        if self.errors or cleaned.get("service") is None:
            return cleaned
        try:
            rules_validate([self.as_rule()])
        except ApplicationError as exc:
            raise ValidationError(exc.message) from exc
        return cleaned


@admin.register(ServiceRule)
class ServiceRuleAdmin(ServiceSavedAdmin):
    """The user's rules; a save goes through the rules service, as on the page and the API."""

    form = ServiceRuleForm
    list_display = ["service", "pin_gpu_uuid", "exclusive", "priority", "updated_at"]
    list_select_related = ["service"]
    filter_horizontal = ["never_with"]

    def save_model(self, request, obj, form, change):
        saved = rule_save(rule=form.as_rule())
        obj.pk = saved.pk
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        """``never_with`` was set by the service."""
