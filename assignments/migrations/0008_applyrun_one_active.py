"""One active apply as a database rule (replaces the apply lock in the cache)."""

from django.db import migrations, models
from django.utils import timezone


def close_extra_active_runs(apps, schema_editor):
    """Before the rule: any queued or running run but the newest was already orphaned by the
    cache lock it lacked; it is marked interrupted so that the constraint can be created."""
    ApplyRun = apps.get_model("assignments", "ApplyRun")
    active = ApplyRun.objects.filter(status__in=["queued", "running"]).order_by("-created_at", "-pk")
    newest = active.values_list("pk", flat=True).first()
    active.exclude(pk=newest).update(
        status="interrupted",
        error="Closed when one active apply became a database rule.",
        finished_at=timezone.now(),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("assignments", "0007_applyrun_heartbeat_journal"),
    ]

    operations = [
        migrations.RunPython(close_extra_active_runs, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="applyrun",
            constraint=models.UniqueConstraint(
                models.Value(True),
                condition=models.Q(("status__in", ["queued", "running"])),
                name="applyrun_one_active",
                violation_error_message="An apply is already queued or running.",
            ),
        ),
    ]
