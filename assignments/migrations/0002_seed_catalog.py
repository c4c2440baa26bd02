"""Seeds the catalog with the five services of the user guide's VRAM table."""

from django.db import migrations

from gpus.units import MB_PER_GB

CATALOG = [
    # name, display name, model, VRAM GB, latency-critical, isolated, budget-adjustable, default budget
    ("ai-llm", "LLM", "Nemotron-3-Nano-30B (Q4_K_M)", 21.7, True, True, False, None,
     "Large language model that writes the scene analysis."),
    ("ai-yolo26", "Object detector", "YOLO26", 0.65, True, False, False, None,
     "Real-time object detection on every camera frame."),
    ("ai-florence", "Florence-2", "Florence-2-Large", 1.5, False, False, False, None,
     "Vision-language captions and dense descriptions."),
    ("ai-clip", "CLIP", "CLIP ViT-L", 1.2, False, False, False, None,
     "Image embeddings for search and re-identification."),
    ("ai-enrichment", "Enrichment", "Model Zoo (9 models)", 6.8, False, False, True, 6.8,
     "Enrichment model zoo; loads as many models as its VRAM budget (VRAM_BUDGET_GB) allows."),
]


def seed(apps, schema_editor):
    AiService = apps.get_model("assignments", "AiService")
    GpuConfig = apps.get_model("assignments", "GpuConfig")
    for order, (name, display, model, gb, latency, isolated, adjustable, budget, desc) in enumerate(CATALOG):
        AiService.objects.update_or_create(
            name=name,
            defaults={
                "display_name": display,
                "model_name": model,
                "vram_required_mb": round(gb * MB_PER_GB),
                "latency_critical": latency,
                "isolated": isolated,
                "budget_adjustable": adjustable,
                "default_budget_gb": budget,
                "description": desc,
                "sort_order": order,
            },
        )
    GpuConfig.objects.get_or_create(pk=1, defaults={"strategy": "vram_based"})


def unseed(apps, schema_editor):
    AiService = apps.get_model("assignments", "AiService")
    AiService.objects.filter(name__in=[row[0] for row in CATALOG]).delete()


class Migration(migrations.Migration):
    dependencies = [("assignments", "0001_initial")]

    operations = [migrations.RunPython(seed, unseed)]
