"""Background work of the GPU inventory."""

from celery import shared_task

from gpus.services import gpu_scan_run


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def detect_gpus_task() -> dict:
    """One scan (periodic under beat, or on demand); concurrent calls share one scan."""
    return gpu_scan_run()
