"""Applies room, background work: the apply/restart, the services' container state kept for the
page, and recovery of interrupted applies (periodic, a watch thread, and at worker start).

The registered task names are the ones they had in ``assignments.tasks`` (``name=``), so
messages queued by an older version still find their task."""

import logging
import time

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django import db
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from applies.live import (
    LIVE_KEY,
    LIVE_REFRESH_LOCK,
    LIVE_STALE_S,
    live_cached,
    live_refresh,
)
from applies.services import apply_recover, apply_repair_pending, config_apply
from assignments.services import config_files_sync
from gpuconfig_site.hosts import host_key
from gpuconfig_site.periodic import PeriodicThread
from gpuconfig_site.read_memo import cache_read, stored
from gpuconfig_site.redis_health import unknown_while_redis_is_down

logger = logging.getLogger(__name__)


# Not acks_late: a worker killed mid-apply must not replay the run; recovery handles it.
@shared_task(name="assignments.tasks.apply_config_task", ignore_result=True, acks_late=False)
def apply_config_task(run_id: int) -> str:
    return config_apply(run_id=run_id).status


def apply_config_enqueue(*, run_id: int) -> None:
    """Hand the apply ``run_id`` (made by ``applies.services.apply_start``) to a worker once
    the transaction that made it commits (at once outside one)."""
    apply_config_task.delay_on_commit(run_id)


@shared_task(name="assignments.tasks.live_refresh_task", ignore_result=True)
def live_refresh_task() -> None:
    """Ask the engine for the services' containers and keep the answer for the page."""
    live_refresh()


@shared_task(name="assignments.tasks.apply_recover_task", ignore_result=True, acks_late=False)
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

    _thread: PeriodicThread | None = None

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
        if cls._thread is None:
            cls._thread = PeriodicThread(
                "gpuconfig-recovery-watch",
                cls.tick,
                lambda: float(settings.GPUCONFIG_RECOVERY_WATCH_INTERVAL),
            )
        cls._thread.start()

    @classmethod
    def stop(cls) -> None:
        if cls._thread is not None:
            cls._thread.stop()


@worker_ready.connect
def _recover_on_worker_start(**_kwargs) -> None:
    """A worker that starts after a crash repairs what an interrupted apply left behind (a run
    whose worker may still live elsewhere is repaired by the watch once its heartbeat is
    overdue) and rewrites generated files a save committed but did not put in place. Not on a
    fleet host's agent: it holds no database (this module is loaded there too, through the
    URLs Celery's Django checks import)."""
    if settings.GPUCONFIG_ROLE == "agent":
        return
    db.close_old_connections()
    apply_recover()
    try:
        config_files_sync()
    except OSError:
        logger.exception("Cannot write the generated files")


@worker_ready.connect
def _start_recovery_watch(**_kwargs) -> None:
    if settings.GPUCONFIG_ROLE != "agent":  # an agent holds no database to watch
        RecoveryWatch.start()


@worker_shutdown.connect
def _stop_recovery_watch(**_kwargs) -> None:
    RecoveryWatch.stop()


@unknown_while_redis_is_down()
def live_refresh_request() -> None:
    """Have the worker refresh the stored state when it is older than ``LIVE_STALE_S`` (one
    request at a time); the caller does not wait for it."""
    snapshot = live_cached()
    if snapshot and time.time() - snapshot["checked_at"] < LIVE_STALE_S:
        return
    if not _refresh_asked() and cache.add(host_key(LIVE_REFRESH_LOCK), 1, LIVE_STALE_S):
        live_refresh_task.delay()


def _refresh_asked() -> bool:
    """Whether a refresh was asked less than ``LIVE_STALE_S`` ago, as the request's shared read
    saw it: then ``cache.add`` of the lock would fail, and needs no round trip of its own."""
    return cache_read(host_key(LIVE_REFRESH_LOCK)) is not None


def live_stored() -> dict | None:
    """The stored state for a request that must not wait on the engine: read once (raising
    while Redis is away), with a refresh asked of the worker when it is stale (one request at
    a time, as ``live_refresh_request``)."""
    snapshot = cache_read(LIVE_KEY)
    if snapshot and time.time() - snapshot["checked_at"] < LIVE_STALE_S:
        return snapshot
    if not _refresh_asked() and cache.add(host_key(LIVE_REFRESH_LOCK), 1, LIVE_STALE_S):
        live_refresh_task.delay()
        # A worker that ran it inline (tests, or no broker) has stored a fresh copy already.
        snapshot = cache.get(stored(LIVE_KEY)) or snapshot
    return snapshot
