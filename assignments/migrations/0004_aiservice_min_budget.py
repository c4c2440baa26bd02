"""The minimum useful VRAM budget of a service; ai-enrichment's is 2.0 GB."""

from django.db import migrations, models


MIN_BUDGETS = {"ai-enrichment": 2.0}


def seed(apps, schema_editor):
    AiService = apps.get_model("assignments", "AiService")
    for name, budget in MIN_BUDGETS.items():
        AiService.objects.filter(name=name, min_budget_gb__isnull=True).update(min_budget_gb=budget)


class Migration(migrations.Migration):

    dependencies = [
        ('assignments', '0003_fallback_as_data'),
    ]

    operations = [
        migrations.AddField(
            model_name='aiservice',
            name='min_budget_gb',
            field=models.FloatField(blank=True, help_text='Smallest VRAM budget worth running it with; no smaller budget is suggested.', null=True),
        ),
        migrations.AddConstraint(
            model_name='aiservice',
            constraint=models.CheckConstraint(condition=models.Q(('min_budget_gb__isnull', True), ('min_budget_gb__gt', 0), _connector='OR'), name='aiservice_min_budget_positive'),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
