"""Background work of the assignments: the apply/restart, and recovery of interrupted ones."""

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from assignments.live import live_refresh
from assignments.services import apply_recover, config_apply, config_files_sync


# Not acks_late: a worker killed mid-apply must not replay the run; recovery handles it.
@shared_task(ignore_result=True, acks_late=False)
def apply_config_task(run_id: int) -> str:
    return config_apply(run_id=run_id).status


@shared_task(ignore_result=True)
def live_refresh_task() -> None:
    """Ask the engine for the services' containers and keep the answer for the page."""
    live_refresh()


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def config_files_sync_task() -> None:
    """Periodic under beat: the generated files follow the database again after a crash
    between a save's commit and its rename, or a folder that was unwritable for a while."""
    config_files_sync()


@shared_task(ignore_result=True, acks_late=False)
def apply_recover_task() -> list[str]:
    """Periodic (``GPUCONFIG_RECOVERY_INTERVAL``): repair applies whose worker died."""
    return apply_recover()


@worker_ready.connect
def _recover_on_worker_start(**_kwargs) -> None:
    """A worker that starts after a crash repairs what an interrupted apply left behind (a run
    whose worker may still live elsewhere is looked at again once its heartbeat is overdue) and
    rewrites generated files a save committed but did not put in place."""
    from django.db import close_old_connections

    close_old_connections()
    apply_recover()
    try:
        config_files_sync()
    except OSError:
        logging.getLogger(__name__).exception("Cannot write the generated files")
    apply_recover_task.apply_async(countdown=settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT + 1)
