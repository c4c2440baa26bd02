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
