"""ApplyRun, moved from the assignments app: created in this app's state only, on the table
the assignments app made (``assignments_applyrun``, with its indexes and the partial unique
constraint ``applyrun_one_active`` of assignments 0008), which is kept as it is."""

import django.db.models.deletion
import uuid
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('assignments', '0012_delete_applyrun'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='ApplyRun',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('operation_id', models.UUIDField(default=uuid.uuid4, editable=False, unique=True, verbose_name='operation ID')),
                        ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('partial', 'Some services rolled back'), ('failed', 'Failed'), ('interrupted', 'Interrupted (repaired by recovery)')], default='queued', max_length=20)),
                        ('actor', models.CharField(blank=True, max_length=150, verbose_name='who')),
                        ('created_at', models.DateTimeField(auto_now_add=True, db_index=True, verbose_name='requested')),
                        ('started_at', models.DateTimeField(blank=True, null=True, verbose_name='started')),
                        ('finished_at', models.DateTimeField(blank=True, null=True, verbose_name='finished')),
                        ('services', models.JSONField(default=list, help_text='Services planned to restart.')),
                        ('results', models.JSONField(default=dict, help_text='Per-service outcome and message.')),
                        ('error', models.TextField(blank=True)),
                        ('log', models.TextField(blank=True)),
                        ('worker', models.CharField(blank=True, help_text='The process carrying out the run (for liveness).', max_length=200)),
                        ('heartbeat_at', models.DateTimeField(blank=True, help_text='Refreshed while the worker carrying out the run lives.', null=True)),
                        ('journal', models.JSONField(default=dict, help_text='Per service: the recreate step reached and the containers involved, written before each engine step so that recovery knows what to undo.')),
                        ('config_version', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='apply_runs', to='assignments.configversion', verbose_name='configuration version')),
                        ('requested_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL, verbose_name='requested by')),
                    ],
                    options={
                        'verbose_name': 'apply run',
                        'db_table': 'assignments_applyrun',
                        'ordering': ['-created_at', '-pk'],
                        'constraints': [models.UniqueConstraint(models.Value(True), condition=models.Q(('status__in', ['queued', 'running'])), name='applyrun_one_active', violation_error_message='An apply is already queued or running.')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
