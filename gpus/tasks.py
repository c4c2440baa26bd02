"""GPU inventory room, background work: the scan task, and ``gpu_scan_request`` that asks a
worker for a scan now (the enqueue lives beside its task)."""

import time

from celery import shared_task
from kombu.exceptions import OperationalError

from gpus.selectors import last_scan_stored
from gpus.services import gpu_scan_run


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def detect_gpus_task() -> dict:
    """One scan (periodic under beat, or on demand); concurrent calls share one scan."""
    return gpu_scan_run()


def gpu_scan_request(*, wait: float) -> tuple[dict, bool]:
    """Ask a worker for a scan now and wait up to ``wait`` seconds for it (Re-scan GPUs).

    Returns the newest scan summary and whether it is fresh (finished after this call).
    Without a reachable broker the scan runs here instead.
    """
    before = (last_scan_stored() or {}).get("seq", 0)
    try:
        detect_gpus_task.delay()
    except OperationalError:
        return gpu_scan_run(), True
    deadline = time.monotonic() + wait
    summary = last_scan_stored() or {}
    while summary.get("seq", 0) <= before and time.monotonic() < deadline:
        time.sleep(0.1)
        summary = last_scan_stored() or {}
    return summary, summary.get("seq", 0) > before
