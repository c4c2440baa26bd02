"""The first configuration row was seeded with an explicit key (before the fleet), which leaves
PostgreSQL's id sequence behind it: the next host's configuration row would collide with it.
Move the sequence past the rows there are (a no-op elsewhere and on new databases)."""

from django.core.management.color import no_style
from django.db import migrations


def sequence_past_rows(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    GpuConfig = apps.get_model("assignments", "GpuConfig")
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), [GpuConfig]):
            cursor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("assignments", "0013_per_host")]

    operations = [migrations.RunPython(sequence_past_rows, migrations.RunPython.noop)]
