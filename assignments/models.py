"""What runs where: the service catalog, the chosen strategy, the saved assignments, their
history and the apply runs."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from assignments.planner.registry import UnknownStrategy, get_strategy
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
    """The current strategy. There is exactly one row (pk 1)."""

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

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="gpuconfig_singleton")]
        verbose_name = "GPU configuration"
        verbose_name_plural = "GPU configuration"

    def __str__(self) -> str:
        return f"Strategy: {self.strategy}"

    @classmethod
    def load(cls) -> GpuConfig:
        obj, _ = cls.objects.get_or_create(pk=1)
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

    service = models.OneToOneField(
        AiService, on_delete=models.CASCADE, related_name="assignment", verbose_name="service"
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

    class Meta:
        ordering = ["service__sort_order", "service__name"]
        constraints = [
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

    class Meta:
        ordering = ["-created_at", "-pk"]
        get_latest_by = "created_at"
        verbose_name = "configuration version"

    def __str__(self) -> str:
        return f"v{self.pk} {self.strategy} ({self.get_source_display()})"


class ApplyRun(models.Model):
    """One apply/restart: its status, per-service results and log, kept for history."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIAL = "partial", "Some services rolled back"
        FAILED = "failed", "Failed"
        INTERRUPTED = "interrupted", "Interrupted (repaired by recovery)"

    FINISHED = (Status.SUCCEEDED, Status.PARTIAL, Status.FAILED, Status.INTERRUPTED)
    ACTIVE = (Status.QUEUED, Status.RUNNING)

    operation_id = models.UUIDField("operation ID", default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    config_version = models.ForeignKey(
        ConfigVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="apply_runs",
        verbose_name="configuration version",
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name="requested by",
    )
    actor = models.CharField("who", max_length=150, blank=True)
    created_at = models.DateTimeField("requested", auto_now_add=True, db_index=True)
    started_at = models.DateTimeField("started", null=True, blank=True)
    finished_at = models.DateTimeField("finished", null=True, blank=True)
    services = models.JSONField(default=list, help_text="Services planned to restart.")
    results = models.JSONField(default=dict, help_text="Per-service outcome and message.")
    error = models.TextField(blank=True)
    log = models.TextField(blank=True)
    worker = models.CharField(
        max_length=200, blank=True, help_text="The process carrying out the run (for liveness)."
    )
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Refreshed while the worker carrying out the run lives."
    )
    journal = models.JSONField(
        default=dict,
        help_text="Per service: the recreate step reached and the containers involved, written "
        "before each engine step so that recovery knows what to undo.",
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "apply run"
        constraints = [
            # One apply at a time, kept by the database: a second queued or running row is
            # refused whoever inserts it, and the slot frees itself with the status change.
            models.UniqueConstraint(
                models.Value(True),
                condition=Q(status__in=["queued", "running"]),
                name="applyrun_one_active",
                violation_error_message="An apply is already queued or running.",
            ),
        ]

    def __str__(self) -> str:
        return f"Apply {self.operation_id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    # --- state changes: each a conditional update from the states it may leave ---------------

    def _move(self, leaving, **fields) -> bool:
        """Write ``fields`` only while the row is still in one of ``leaving``; returns whether
        it was. The instance follows the database either way."""
        from assignments.run_reads import runs_state_bump

        moved = ApplyRun.objects.filter(pk=self.pk, status__in=list(leaving)).update(**fields)
        if moved:
            runs_state_bump()  # an update sends no signal
        if moved:
            for name, value in fields.items():
                setattr(self, name, value)
        else:
            self.refresh_from_db()
        return bool(moved)

    def claim(self, *, worker: str = "") -> bool:
        """queued → running, for the worker that carries the run out; False when the run is no
        longer queued (a task delivered twice, or recovery closed it meanwhile)."""
        now = timezone.now()
        return self._move(
            [self.Status.QUEUED],
            status=self.Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            worker=worker,
        )

    def finish(self, status: str, *, error: str = "", **fields) -> bool:
        """queued or running → ``status`` (succeeded, partial or failed) with its outcome; False
        when the run has already ended, for instance when recovery marked it interrupted: that
        verdict stands."""
        if status not in (self.Status.SUCCEEDED, self.Status.PARTIAL, self.Status.FAILED):
            raise ValueError(f"finish() takes an outcome, not {status!r}")
        return self._move(
            [self.Status.QUEUED, self.Status.RUNNING],
            status=status,
            error=error,
            finished_at=timezone.now(),
            **fields,
        )

    def interrupt(self, reason: str, **fields) -> bool:
        """queued or running → interrupted, with why; False when the run had already ended."""
        return self._move(
            [self.Status.QUEUED, self.Status.RUNNING],
            status=self.Status.INTERRUPTED,
            error=reason,
            finished_at=timezone.now(),
            **fields,
        )

    def repaired(self, note: str, **fields) -> bool:
        """succeeded, partial or failed → interrupted once recovery repaired what the run left
        half done (its restore failed while the engine was away)."""
        return self._move(
            [self.Status.SUCCEEDED, self.Status.PARTIAL, self.Status.FAILED],
            status=self.Status.INTERRUPTED,
            error=f"{self.error}\n{note}".strip(),
            **fields,
        )


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
