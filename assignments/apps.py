"""Assignments room: the Django app of the catalog and the saved configuration."""

from django.apps import AppConfig


class AssignmentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "assignments"
    verbose_name = "GPU assignments"

    def ready(self) -> None:
        # The inventory announces its changes; the assignments follow them (gpus does not
        # import this app).
        # Imported in ready(): these modules import models, which load after this module.
        from assignments.services.inventory import inventory_changed_receiver
        from gpus.signals import inventory_changed

        inventory_changed.connect(
            inventory_changed_receiver, dispatch_uid="assignments.follow_inventory"
        )
        # Any write of this app's configuration rows makes the cached read model stale. The
        # receivers listen to this app's models only: a post_delete receiver for every sender
        # would take Django's fast delete from every model of the project (each delete would
        # first read the rows it removes, and signal each one).
        from django.db.models.signals import post_delete, post_save

        for model in self.get_models(include_auto_created=True):
            name = model._meta.label_lower
            post_save.connect(
                _config_changed, sender=model, dispatch_uid=f"config_state.save.{name}"
            )
            post_delete.connect(
                _config_changed, sender=model, dispatch_uid=f"config_state.delete.{name}"
            )


def _config_changed(sender, **kwargs) -> None:
    from django.db import transaction

    from assignments.selectors import config_state_bump  # imports models: after app loading

    # Now, so this process reads the change at once; and once committed, so a reader that
    # cached the old rows meanwhile (under the new state) reads the new ones.
    config_state_bump()
    transaction.on_commit(config_state_bump)
