"""GPU inventory room, background work: the scan task, and ``gpu_scan_request`` that asks a
worker for a scan now (the enqueue lives beside its task)."""

import time
from collections.abc import Callable

from celery import shared_task
from kombu.exceptions import OperationalError

from gpuconfig_site.hosts import host_is_local, host_name
from gpus.selectors import last_scan_stored
from gpus.services import gpu_scan_run


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def detect_gpus_task() -> dict:
    """One scan (periodic under beat, or on demand); concurrent calls share one scan."""
    return gpu_scan_run()


def gpu_scan_request(*, wait: float) -> tuple[dict, bool]:
    """Ask a worker for a scan now and wait up to ``wait`` seconds for it (Re-scan GPUs).

    Returns the newest scan summary and whether it is fresh (finished after this call).
    Without a reachable broker the scan runs here instead. A host that is not this machine is
    scanned by its own agent: the scan is asked of it through the sender registered with
    ``remote_scan_sender_register`` (the fleet's), and its report moves the host's last scan.
    """
    before = (last_scan_stored() or {}).get("seq", 0)
    if not host_is_local():
        refused = _remote_scan_ask(wait)
        if refused is not None:
            return refused, False
    else:
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


# Another host's scan is asked of its agent through the broker: the fleet knows how (this app
# imports nothing of it), and registers the sender at start-up.
RemoteScanSender = Callable[..., None]
_remote_scan_sender: RemoteScanSender | None = None


def remote_scan_sender_register(sender: RemoteScanSender | None) -> None:
    """Set the function that asks the host at hand's agent for a scan (called with ``wait=``,
    the seconds the caller will wait); None removes it."""
    global _remote_scan_sender
    _remote_scan_sender = sender


def _remote_scan_ask(wait: float) -> dict | None:
    """Ask the host at hand's agent for a scan; a summary saying why when it cannot be."""
    if _remote_scan_sender is None:
        return {"error": f"Host {host_name()!r} is scanned by its own agent; none can be asked."}
    try:
        _remote_scan_sender(wait=wait)
    except OperationalError as exc:
        return {"error": f"Host {host_name()!r}'s agent could not be asked for a scan: {exc}"}
    return None
