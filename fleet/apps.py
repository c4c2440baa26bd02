"""The fleet: the GPU hosts gpuconfig manages, their agents and how they prove who they are."""

from django.apps import AppConfig


class FleetConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fleet"
    verbose_name = "GPU hosts"
