"""Applies room, models: ``ApplyRun``, one apply/restart of the saved configuration, with its
guarded state changes. The table is the one the assignments app created
(``assignments_applyrun``); the model moved here with ``SeparateDatabaseAndState``.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from applies.run_reads import runs_state_bump
from assignments.models import ConfigVersion
from gpuconfig_site.hosts import HostScopedManager, host_field


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

    host = host_field()
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

    all_hosts = models.Manager()
    objects = HostScopedManager()

    class Meta:
        default_manager_name = "all_hosts"
        # The table the assignments app created; the model moved without moving its rows.
        db_table = "assignments_applyrun"
        ordering = ["-created_at", "-pk"]
        verbose_name = "apply run"
        constraints = [
            # One apply at a time on each host, kept by the database: a second queued or
            # running row of a host is refused whoever inserts it, and the slot frees itself
            # with the status change. Two hosts apply at the same time.
            models.UniqueConstraint(
                "host",
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
        moved = ApplyRun.all_hosts.filter(pk=self.pk, status__in=list(leaving)).update(**fields)
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
