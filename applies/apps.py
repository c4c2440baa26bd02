"""Applies room: the Django app of the apply (``ApplyRun``, runtimes, tasks, API)."""

from django.apps import AppConfig

from applies.run_reads import runs_state_bump


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

        # The status reads keep the latest run and the last outcomes: any write of a run's row
        # makes them stale (its state changes, the heartbeat and the journal bump it themselves).
        from django.db.models.signals import post_delete, post_save

        from applies.models import ApplyRun

        post_save.connect(_runs_changed, sender=ApplyRun, dispatch_uid="applies.runs_state.save")
        post_delete.connect(
            _runs_changed, sender=ApplyRun, dispatch_uid="applies.runs_state.delete"
        )


def _runs_changed(sender, **kwargs) -> None:
    runs_state_bump()
