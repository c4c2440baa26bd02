from django.apps import AppConfig


class AssignmentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "assignments"
    verbose_name = "GPU assignments"

    def ready(self) -> None:
        # The inventory announces its changes; the assignments follow them (gpus does not
        # import this app).
        from assignments.ownership import container_owners
        from assignments.services.inventory import inventory_changed_receiver
        from gpus.attribution import container_resolver_register
        from gpus.signals import inventory_changed

        # Scans name the containers that hold GPU memory through the container engine.
        container_resolver_register(container_owners)

        inventory_changed.connect(
            inventory_changed_receiver, dispatch_uid="assignments.follow_inventory"
        )
        # Any write of this app's configuration rows makes the cached read model stale.
        from django.db.models.signals import post_delete, post_save

        post_save.connect(_config_changed, dispatch_uid="assignments.config_state.save")
        post_delete.connect(_config_changed, dispatch_uid="assignments.config_state.delete")


# Rows that are not the configuration: an apply's progress changes nothing a plan reads.
_NOT_CONFIG = {"ApplyRun"}


def _config_changed(sender, **kwargs) -> None:
    if sender._meta.app_label != "assignments":
        return
    if sender.__name__ == "ApplyRun":
        from assignments.run_reads import runs_state_bump

        runs_state_bump()  # the status reads keep the latest run and the last outcomes
        return
    if sender.__name__ in _NOT_CONFIG:
        return
    from django.db import transaction

    from assignments.selectors import config_state_bump

    # Now, so this process reads the change at once; and once committed, so a reader that
    # cached the old rows meanwhile (under the new state) reads the new ones.
    config_state_bump()
    transaction.on_commit(config_state_bump)
