"""Applies room: the Django app of the apply (``ApplyRun``, runtimes, tasks, API)."""

from django.apps import AppConfig


class AppliesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "applies"
    verbose_name = "GPU applies"

    def ready(self) -> None:
        # Imported in ready(): these modules import models, which load after this module.
        from applies.ownership import container_owners
        from gpus.attribution import container_resolver_register

        # Scans name the containers that hold GPU memory through the container engine.
        container_resolver_register(container_owners)
