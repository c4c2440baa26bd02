"""The fleet: the GPU hosts gpuconfig manages, their agents and how they prove who they are."""

from django.apps import AppConfig


class FleetConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fleet"
    verbose_name = "GPU hosts"

    def ready(self) -> None:
        # Imported in ready(): models load after this module.
        from fleet.scans import scan_request_send
        from gpus.tasks import remote_scan_sender_register

        # Detect / Re-scan for a host that is not this machine asks that host's agent.
        remote_scan_sender_register(scan_request_send)
