"""Applies room. Live apply progress, per run and per service, kept in the cache (Redis in
production).

One key per service so the parallel restarts of one run never overwrite each other's state;
one key per run lists its services. Going through Django's cache API means the embedded
default (a file cache) and Redis share this one code path.
"""

from __future__ import annotations

import time

from django.core.cache import cache

from applies.runtime.base import Step
from gpuconfig_site.redis_health import unknown_while_redis_is_down

TTL = 24 * 3600
TERMINAL = frozenset(
    {Step.HEALTHY, Step.ROLLED_BACK, Step.FAILED, Step.UNCHANGED, Step.INTERRUPTED}
)
"""Steps after which a service's part of an apply is over."""


def _run_key(operation_id: str) -> str:
    return f"apply:{operation_id}:services"


def _service_key(operation_id: str, service: str) -> str:
    return f"apply:{operation_id}:svc:{service}"


def progress_init(operation_id: str, services: list[str]) -> None:
    now = time.time()
    cache.set(_run_key(operation_id), list(services), TTL)
    cache.set_many(
        {
            _service_key(operation_id, s): {
                "service": s,
                "status": str(Step.PENDING),
                "message": "Waiting to restart",
                "started_at": now,
                "updated_at": now,
                "history": [{"status": str(Step.PENDING), "at": now}],
            }
            for s in services
        },
        TTL,
    )


def progress_update(operation_id: str, service: str, status: str, message: str = "") -> None:
    key = _service_key(operation_id, service)
    now = time.time()
    entry = cache.get(key) or {"service": service, "started_at": now, "history": []}
    entry["status"] = str(status)
    entry["message"] = message
    entry["updated_at"] = now
    entry["history"] = [*entry.get("history", []), {"status": str(status), "at": now}]
    cache.set(key, entry, TTL)


def progress_note(operation_id: str, service: str, **fields) -> None:
    """Set extra fields on a service's entry (its move mode and reason, its measured
    downtime) without changing its status."""
    key = _service_key(operation_id, service)
    now = time.time()
    entry = cache.get(key) or {
        "service": service,
        "status": str(Step.PENDING),
        "message": "",
        "started_at": now,
        "updated_at": now,
        "history": [],
    }
    entry.update(fields)
    cache.set(key, entry, TTL)


@unknown_while_redis_is_down(default=list)
def progress_get(operation_id: str) -> list[dict]:
    services = cache.get(_run_key(operation_id)) or []
    values = cache.get_many([_service_key(operation_id, s) for s in services])
    out = []
    now = time.time()
    for s in services:
        entry = values.get(_service_key(operation_id, s)) or {
            "service": s,
            "status": str(Step.PENDING),
            "message": "",
        }
        started = entry.get("started_at") or now
        end = entry.get("updated_at", now) if entry.get("status") in TERMINAL else now
        out.append({**entry, "elapsed_s": round(max(end - started, 0.0), 1)})
    return out
