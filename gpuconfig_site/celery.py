"""The Celery application: detection scans and the apply/restart run here."""

import os

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpuconfig_site.settings")

app = Celery("gpuconfig_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _start_heartbeat(sender=None, **_kwargs) -> None:
    """The worker tells /readyz it is alive, from its main process, every few seconds."""
    # Imported here: this module loads with the settings package, before Django is set up.
    from gpuconfig_site.heartbeat import WorkerHeartbeat

    WorkerHeartbeat.start(hostname=getattr(sender, "hostname", "") or "")


@worker_shutdown.connect
def _stop_heartbeat(**_kwargs) -> None:
    from gpuconfig_site.heartbeat import WorkerHeartbeat  # as above: before Django is set up

    WorkerHeartbeat.stop()


def _connect_log_context() -> None:
    from ops.logs import connect_celery_signals  # as above: before Django is set up

    connect_celery_signals()


_connect_log_context()
