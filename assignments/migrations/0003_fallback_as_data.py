"""A fallback is data (lost GPU, target GPU, since when), no longer a stored sentence."""

from django.db import migrations, models
from django.utils import timezone


def reason_to_data(apps, schema_editor):
    """Rows whose ``fallback_reason`` was set were falling back from their saved GPU."""
    Assignment = apps.get_model("assignments", "Assignment")
    for row in Assignment.objects.exclude(fallback_reason=""):
        row.lost_gpu_uuid = row.gpu_uuid
        row.fallback_since = row.updated_at or timezone.now()
        row.save(update_fields=["lost_gpu_uuid", "fallback_since"])


def data_to_reason(apps, schema_editor):
    """Going back: the sentence is not recoverable word for word; mark the fallback plainly."""
    Assignment = apps.get_model("assignments", "Assignment")
    for row in Assignment.objects.exclude(fallback_since=None):
        target = f"GPU {row.fallback_gpu_index}" if row.fallback_gpu_uuid else "no GPU"
        row.fallback_reason = f"{row.service.name}: falling back to {target}."[:300]
        row.save(update_fields=["fallback_reason"])


class Migration(migrations.Migration):
    dependencies = [
        ("assignments", "0002_seed_catalog"),
    ]

    operations = [
        migrations.AddField(
            model_name="assignment",
            name="lost_gpu_uuid",
            field=models.CharField(blank=True, max_length=96),
        ),
        migrations.AddField(
            model_name="assignment",
            name="fallback_since",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(reason_to_data, data_to_reason),
        migrations.RemoveField(
            model_name="assignment",
            name="fallback_reason",
        ),
    ]
