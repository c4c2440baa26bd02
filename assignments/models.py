"""Assignments room, models: what runs where. The service catalog, the chosen strategy, the
saved assignments and their history (the apply runs are ``applies.models``)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from assignments.planner.registry import UnknownStrategy, get_strategy
from gpuconfig_site.hosts import HostScopedManager, host_field, host_name
from gpus.units import MB_PER_GB


class AiService(models.Model):
    """One containerised AI service gpuconfig places (the catalog, editable in the admin).

    The strategy flags live here so a strategy never hard-codes service names.
    """

    name = models.SlugField(
        "service", max_length=100, unique=True, help_text="Compose service name."
    )
    display_name = models.CharField("display name", max_length=200)
    model_name = models.CharField(
        "model", max_length=200, blank=True, help_text="The model it serves."
    )
    description = models.TextField(blank=True)
    vram_required_mb = models.PositiveIntegerField(
        "VRAM required (MB)", help_text="VRAM estimate in MB (1 GB = 1024 MB)."
    )
    latency_critical = models.BooleanField(
        "latency-critical",
        default=False,
        help_text="Kept on the fastest GPU by the latency-optimized strategy.",
    )
    isolated = models.BooleanField(
        "isolated", default=False, help_text="Prefers a GPU of its own (isolation-first strategy)."
    )
    budget_adjustable = models.BooleanField(
        "VRAM budget adjustable",
        default=False,
        help_text="Reads a VRAM budget from VRAM_BUDGET_GB.",
    )
    default_budget_gb = models.FloatField(
        "default VRAM budget (GB)",
        null=True,
        blank=True,
        help_text="The budget it runs with when none is set (budget-adjustable services).",
    )
    min_budget_gb = models.FloatField(
        "minimum VRAM budget (GB)",
        null=True,
        blank=True,
        help_text="Smallest VRAM budget worth running it with; no smaller budget is suggested.",
    )
    enabled = models.BooleanField(default=True, help_text="Disabled services are not placed.")
    sort_order = models.PositiveSmallIntegerField(
        "order", default=0, help_text="Position on the page and in lists."
    )

    class Meta:
        ordering = ["sort_order", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(vram_required_mb__gt=0), name="aiservice_vram_required_positive"
            ),
            models.CheckConstraint(
                condition=Q(default_budget_gb__isnull=True) | Q(default_budget_gb__gt=0),
                name="aiservice_default_budget_positive",
            ),
            models.CheckConstraint(
                condition=Q(min_budget_gb__isnull=True) | Q(min_budget_gb__gt=0),
                name="aiservice_min_budget_positive",
            ),
        ]
        verbose_name = "AI service"
        verbose_name_plural = "AI services"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.budget_adjustable and self.default_budget_gb is None:
            raise ValidationError(
                {"default_budget_gb": "A budget-adjustable service needs a default budget."}
            )
        if (
            self.min_budget_gb is not None
            and self.default_budget_gb is not None
            and self.min_budget_gb > self.default_budget_gb
        ):
            raise ValidationError(
                {"min_budget_gb": "The minimum budget cannot be above the default budget."}
            )

    @property
    def vram_required_gb(self) -> float:
        return round(self.vram_required_mb / MB_PER_GB, 2)


def validate_strategy(value: str) -> None:
    try:
        get_strategy(value)
    except UnknownStrategy as exc:
        raise ValidationError(str(exc)) from None


class AiServicePart(models.Model):
    """One model a service hosts beside others (a gateway running a detector, a
    re-identification and a threat model): its name and VRAM. A service with parts needs
    their sum, kept in its ``vram_required_mb`` when the parts are saved."""

    service = models.ForeignKey(AiService, on_delete=models.CASCADE, related_name="parts")
    name = models.CharField(max_length=100, help_text="The model, e.g. detector.")
    vram_mb = models.PositiveIntegerField("VRAM (MB)", help_text="1 GB = 1024 MB.")
    sort_order = models.PositiveSmallIntegerField("order", default=0)

    class Meta:
        ordering = ["sort_order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["service", "name"], name="aiservicepart_unique_name"),
            models.CheckConstraint(condition=Q(vram_mb__gt=0), name="aiservicepart_vram_positive"),
        ]
        verbose_name = "hosted model"
        verbose_name_plural = "hosted models (the service needs their sum)"

    def __str__(self) -> str:
        return f"{self.service.name}: {self.name}"

    @property
    def vram_gb(self) -> float:
        return round(self.vram_mb / MB_PER_GB, 2)


class GpuConfig(models.Model):
    """A host's current strategy: one row per host."""

    host = host_field(unique=True)
    strategy = models.CharField(
        max_length=40,
        default="vram_based",
        validators=[validate_strategy],
        help_text="How services are placed: manual, vram_based, latency_optimized, "
        "isolation_first or balanced.",
    )
    updated_at = models.DateTimeField("updated", auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="updated by",
    )

    all_hosts = models.Manager()
    objects = HostScopedManager()

    class Meta:
        default_manager_name = "all_hosts"
        verbose_name = "GPU configuration"
        verbose_name_plural = "GPU configuration"

    def __str__(self) -> str:
        return f"Strategy: {self.strategy}"

    @classmethod
    def load(cls) -> GpuConfig:
        """The host at hand's row, made on first use."""
        obj, _ = cls.all_hosts.get_or_create(host=host_name())
        return obj


class Assignment(models.Model):
    """A service's saved GPU, remembered by UUID as well as index, with an optional budget.

    While the saved GPU is lost the service falls back: ``fallback_since`` says since when,
    ``lost_gpu_uuid`` which card went away and ``fallback_gpu_*`` where the service runs
    meanwhile (empty: nowhere, no GPU was left). When the saved GPU returns the fallback is
    cleared and the saved choice applies again. The sentence users read is composed from these
    at read time (``selectors.fallback_message``).
    """

    FALLBACK_FIELDS = ("fallback_gpu_index", "fallback_gpu_uuid", "lost_gpu_uuid", "fallback_since")

    host = host_field()
    service = models.ForeignKey(
        AiService, on_delete=models.CASCADE, related_name="assignments", verbose_name="service"
    )
    gpu_index = models.PositiveSmallIntegerField(
        "GPU", null=True, blank=True, help_text="GPU index; empty: not on any GPU."
    )
    gpu_uuid = models.CharField("GPU UUID", max_length=96, blank=True)
    vram_budget_override = models.FloatField(
        "VRAM budget (GB)",
        null=True,
        blank=True,
        help_text="VRAM budget in GB (budget-adjustable services only); empty: the default.",
    )
    budget_lowered_for_uuid = models.CharField(
        "budget lowered for GPU",
        max_length=96,
        blank=True,
        help_text=(
            "The GPU (UUID) the planner lowered the budget to fit; empty: the budget is the "
            "user's own. A lowered budget goes when the service moves where its full need fits."
        ),
    )
    fallback_gpu_index = models.PositiveSmallIntegerField(
        "fallback GPU", null=True, blank=True, help_text="Where it runs while its GPU is lost."
    )
    fallback_gpu_uuid = models.CharField("fallback GPU UUID", max_length=96, blank=True)
    lost_gpu_uuid = models.CharField("lost GPU UUID", max_length=96, blank=True)
    fallback_since = models.DateTimeField("falling back since", null=True, blank=True)
    updated_at = models.DateTimeField("updated", auto_now=True)

    all_hosts = models.Manager()
    objects = HostScopedManager()

    class Meta:
        default_manager_name = "all_hosts"
        ordering = ["service__sort_order", "service__name"]
        constraints = [
            # One saved placement per service on each host.
            models.UniqueConstraint(
                fields=["host", "service"], name="assignment_unique_host_service"
            ),
            models.CheckConstraint(
                condition=Q(vram_budget_override__isnull=True) | Q(vram_budget_override__gt=0),
                name="assignment_budget_positive",
            ),
        ]
        verbose_name = "assignment"

    def __str__(self) -> str:
        return f"{self.service.name} → GPU {self.effective_gpu_index}"

    @property
    def is_falling_back(self) -> bool:
        return self.fallback_since is not None

    @property
    def effective_gpu_index(self) -> int | None:
        """The GPU the service runs on now: the fallback while one is active."""
        if self.is_falling_back:
            return self.fallback_gpu_index
        return self.gpu_index

    @property
    def effective_gpu_uuid(self) -> str:
        return self.fallback_gpu_uuid if self.is_falling_back else self.gpu_uuid

    def fallback_set(self, *, lost_uuid: str, target, since) -> None:
        """Run on ``target`` (a Gpu, or None for nowhere) while ``lost_uuid`` is away."""
        self.lost_gpu_uuid = lost_uuid
        self.fallback_gpu_index = target.index if target else None
        self.fallback_gpu_uuid = target.uuid if target else ""
        if self.fallback_since is None:
            self.fallback_since = since

    def fallback_clear(self) -> None:
        self.fallback_gpu_index = None
        self.fallback_gpu_uuid = ""
        self.lost_gpu_uuid = ""
        self.fallback_since = None


class ConfigVersion(models.Model):
    """A snapshot kept at every save (and every automatic fallback): who, when, what."""

    class Source(models.TextChoices):
        INITIAL = "initial", "First detection: initial plan"
        SAVE = "save", "Saved"
        FALLBACK = "fallback", "GPU lost: fallback"
        RESTORE = "restore", "GPU back: restored"
        REINDEX = "reindex", "GPU indices changed"
        CATALOG = "catalog", "Service catalog changed"
        ROLLBACK = "rollback", "Rolled back to an earlier version"
        IMPORT = "import", "Imported from a file"

    host = host_field()
    created_at = models.DateTimeField("saved", auto_now_add=True, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="saved by",
    )
    actor = models.CharField("who", max_length=150, blank=True, help_text="Who made it, as text.")
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.SAVE)
    strategy = models.CharField(max_length=40)
    assignments = models.JSONField(default=list, help_text="Every service's GPU and budget.")
    warnings = models.JSONField(default=list, help_text="Warnings shown when it was saved.")

    all_hosts = models.Manager()
    objects = HostScopedManager()

    class Meta:
        default_manager_name = "all_hosts"
        ordering = ["-created_at", "-pk"]
        get_latest_by = "created_at"
        verbose_name = "configuration version"

    def __str__(self) -> str:
        return f"v{self.pk} {self.strategy} ({self.get_source_display()})"


class ServiceRule(models.Model):
    """A rule the user sets for one service; every strategy honours it (see
    ``assignments.planner.rules``), and a manual edit that breaks it is warned about.

    The pin names a GPU by UUID so that it survives re-indexing. ``never_with`` is kept as the
    user gave it; the planner reads it both ways.
    """

    service = models.OneToOneField(
        AiService, on_delete=models.CASCADE, related_name="rule", verbose_name="service"
    )
    pin_gpu_uuid = models.CharField(
        "pinned to GPU (UUID)",
        max_length=96,
        blank=True,
        help_text="Always place the service on this GPU; empty: no pin.",
    )
    exclusive = models.BooleanField(default=False, help_text="No other managed service on its GPU.")
    never_with = models.ManyToManyField(
        AiService,
        blank=True,
        related_name="+",
        verbose_name="never with",
        help_text="Services never placed on the same GPU as this one.",
    )
    priority = models.PositiveSmallIntegerField(
        default=0,
        help_text="Higher keeps its VRAM budget longer when memory is short, and its rules "
        "longer when rules conflict.",
    )
    updated_at = models.DateTimeField("updated", auto_now=True)

    class Meta:
        ordering = ["service__sort_order", "service__name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority__lte=1000), name="servicerule_priority_range"
            ),
        ]
        verbose_name = "service rule"

    def __str__(self) -> str:
        return f"Rule for {self.service.name}"
