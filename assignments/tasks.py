"""Background work of the assignments: the apply/restart, and recovery of interrupted ones."""

import logging
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django import db
from django.conf import settings
from django.db import connection

from assignments.live import live_refresh
from assignments.services import (
    apply_recover,
    apply_repair_pending,
    config_apply,
    config_files_sync,
)

logger = logging.getLogger(__name__)


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


class RecoveryWatch:
    """A thread in the worker's main process that repairs as soon as repair is possible: every
    ``GPUCONFIG_RECOVERY_WATCH_INTERVAL`` s it asks the database whether an apply needs repair
    (a run whose heartbeat has since gone overdue, or a restore the engine's absence left
    undone) and, if so, runs recovery, which succeeds once the engine answers again.

    It replaces a countdown message the worker used to send itself at start: a worker holding
    an unacknowledged countdown message died when Redis restarted (kombu's restore of unacked
    messages on a closed connection), and a thread holds nothing in the broker.
    """

    _thread: threading.Thread | None = None
    _stop = threading.Event()

    @classmethod
    def tick(cls) -> None:
        """One look (the thread's loop body; callable alone)."""
        try:
            if apply_repair_pending():
                apply_recover()
        except Exception:  # the database is away for a moment: the next tick looks again
            logger.warning("recovery watch: could not look for applies to repair", exc_info=True)
        finally:
            connection.close()

    @classmethod
    def start(cls) -> None:
        if cls._thread and cls._thread.is_alive():
            return
        cls._stop.clear()
        interval = float(settings.GPUCONFIG_RECOVERY_WATCH_INTERVAL)

        def run() -> None:
            while not cls._stop.wait(interval):
                cls.tick()

        cls._thread = threading.Thread(target=run, name="gpuconfig-recovery-watch", daemon=True)
        cls._thread.start()

    @classmethod
    def stop(cls) -> None:
        cls._stop.set()


@worker_ready.connect
def _recover_on_worker_start(**_kwargs) -> None:
    """A worker that starts after a crash repairs what an interrupted apply left behind (a run
    whose worker may still live elsewhere is repaired by the watch once its heartbeat is
    overdue) and rewrites generated files a save committed but did not put in place."""
    db.close_old_connections()
    apply_recover()
    try:
        config_files_sync()
    except OSError:
        logger.exception("Cannot write the generated files")


@worker_ready.connect
def _start_recovery_watch(**_kwargs) -> None:
    RecoveryWatch.start()


@worker_shutdown.connect
def _stop_recovery_watch(**_kwargs) -> None:
    RecoveryWatch.stop()
