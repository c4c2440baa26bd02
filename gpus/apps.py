from django.apps import AppConfig


class GpusConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "gpus"
    verbose_name = "GPU inventory"

    def ready(self):
        from django.db.models.signals import post_delete, post_save

        # Imported in ready(): models load after this module.
        from gpus.models import Gpu, GpuSample
        from gpus.services import inventory_version_bump

        post_save.connect(inventory_version_bump, sender=Gpu, dispatch_uid="gpus-read-version")
        post_delete.connect(inventory_version_bump, sender=Gpu, dispatch_uid="gpus-read-version")
        # Samples are pruned only by scans, which move the scan sequence: no post_delete (it
        # would make the prune load every row it deletes).
        post_save.connect(
            inventory_version_bump, sender=GpuSample, dispatch_uid="gpus-read-version"
        )
