"""Site room: the worker's heartbeat. A thread in the worker records "alive" in the cache, and
``worker_alive`` reads it (the apply's status and ``/readyz`` say at once when no worker runs).
"""

from __future__ import annotations

import os
import time

from django.conf import settings
from django.core.cache import cache

from gpuconfig_site.periodic import PeriodicThread

HEARTBEAT_KEY = "gpuconfig:worker-heartbeat"


def worker_alive() -> bool:
    """Whether a worker beat its heart lately (within two of its beat intervals, at least
    15 s): answered from the cache in a moment, so an apply can say at once that none runs.
    A cache that does not answer says nothing against the worker."""
    try:
        beat = cache.get(HEARTBEAT_KEY)
    except Exception:
        return True
    return bool(beat) and time.time() - beat["at"] < max(15.0, 2 * WorkerHeartbeat.interval())


class WorkerHeartbeat:
    """A thread in the worker's main process that records "alive" in the cache."""

    _thread: PeriodicThread | None = None

    @classmethod
    def interval(cls) -> float:
        return max(1.0, min(10.0, settings.GPUCONFIG_SCAN_INTERVAL / 3))

    @classmethod
    def beat(cls, *, hostname: str = "") -> None:
        """Record one heartbeat now (the thread calls this; a cache outage is waited out)."""
        try:
            cache.set(
                HEARTBEAT_KEY,
                {"at": time.time(), "hostname": hostname, "pid": os.getpid()},
                timeout=int(2 * settings.GPUCONFIG_SCAN_INTERVAL + 10),
            )
        except Exception:  # Redis down: the next beat after it returns says we are alive
            pass

    @classmethod
    def start(cls, *, hostname: str = "") -> None:
        if cls._thread is None:
            cls._thread = PeriodicThread(
                "gpuconfig-heartbeat",
                lambda: cls.beat(hostname=hostname),
                cls.interval,
                immediate=True,
            )
        cls._thread.start()

    @classmethod
    def stop(cls) -> None:
        if cls._thread is not None:
            cls._thread.stop()
