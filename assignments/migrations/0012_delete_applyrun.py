"""ApplyRun moved to the applies app: removed from this app's state only; its table
(``assignments_applyrun``) stays, now owned by ``applies`` (see applies 0001)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('assignments', '0011_service_rules'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='ApplyRun',
                ),
            ],
            database_operations=[],
        ),
    ]
