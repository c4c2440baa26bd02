"""The apply run's content type follows the model to the applies app, so its permissions (and
the groups and users holding them) and the admin's history keep working."""

from django.db import migrations


def _move(apps, old_label: str, new_label: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    old = ContentType.objects.filter(app_label=old_label, model="applyrun").first()
    if old is None:  # a fresh database: post_migrate creates the new one
        return
    # One made by a migrate run in between (nothing refers to it yet) gives way to the old one.
    ContentType.objects.filter(app_label=new_label, model="applyrun").delete()
    old.app_label = new_label
    old.save(update_fields=["app_label"])


def forwards(apps, schema_editor):
    _move(apps, "assignments", "applies")


def backwards(apps, schema_editor):
    _move(apps, "applies", "assignments")


class Migration(migrations.Migration):
    dependencies = [
        ("applies", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
