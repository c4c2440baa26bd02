"""The Celery application: detection scans and the apply/restart run here."""

import os

from celery import Celery
from celery.signals import (
    before_task_publish,
    task_postrun,
    task_prerun,
    worker_ready,
    worker_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpuconfig_site.settings")

app = Celery("gpuconfig_site")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _task_packages() -> list[str]:
    """Every app's tasks; an agent (``GPUCONFIG_ROLE=agent``, no database) loads the fleet's
    only, so none of the central worker's start-up work (recovery, readiness) runs there."""
    from django.apps import apps
    from django.conf import settings

    if settings.GPUCONFIG_ROLE == "agent":
        return ["fleet"]
    return [config.name for config in apps.get_app_configs()]


app.autodiscover_tasks(_task_packages)


@worker_ready.connect
def _start_heartbeat(sender=None, **_kwargs) -> None:
    """The worker tells /readyz it is alive, from its main process, every few seconds (an
    agent has no cache of the centre's to tell: the centre sees it by its host heartbeats)."""
    # Imported here: this module loads with the settings package, before Django is set up.
    from django.conf import settings

    from gpuconfig_site.heartbeat import WorkerHeartbeat

    if settings.GPUCONFIG_ROLE == "agent":
        return

    WorkerHeartbeat.start(hostname=getattr(sender, "hostname", "") or "")


@worker_shutdown.connect
def _stop_heartbeat(**_kwargs) -> None:
    from gpuconfig_site.heartbeat import WorkerHeartbeat  # as above: before Django is set up

    WorkerHeartbeat.stop()


# --- The host a task works on travels with it -----------------------------------------------
# A task enqueued while a request (or another task) works on a host carries that host's name in
# a message header, and runs on that host at the other end: an apply of host B started from
# ``?host=b`` is carried out for B. A message without the header (beat's, an older version's)
# runs on the default host.
HOST_HEADER = "gpuconfig_host"
_host_tokens: dict[str, object] = {}


@before_task_publish.connect
def _publish_host(headers=None, **_kwargs) -> None:
    from gpuconfig_site.hosts import host_name  # as above: before Django is set up

    if headers is not None and HOST_HEADER not in headers:
        headers[HOST_HEADER] = host_name()


@task_prerun.connect
def _enter_host(task_id=None, task=None, **_kwargs) -> None:
    from gpuconfig_site.hosts import host_set  # as above: before Django is set up

    name = getattr(task.request, HOST_HEADER, None) if task is not None else None
    _host_tokens[task_id] = host_set(name if isinstance(name, str) else None)


@task_postrun.connect
def _leave_host(task_id=None, **_kwargs) -> None:
    from gpuconfig_site.hosts import host_reset  # as above: before Django is set up

    token = _host_tokens.pop(task_id, None)
    if token is not None:
        host_reset(token)


def _connect_log_context() -> None:
    from ops.logs import connect_celery_signals  # as above: before Django is set up

    connect_celery_signals()


_connect_log_context()
