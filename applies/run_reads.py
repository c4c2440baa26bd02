"""Applies room. The apply runs as the read paths show them, kept in the cache while no run changed.

``/gpu-config/status``, ``/gpu-config/services`` and the page read the latest run and each
service's last outcome on every request. Both are kept under a runs state that every write
of an ``ApplyRun`` row moves (``runs_state_bump``: the model's save and delete signals, its
state changes, the heartbeat and the journal of a running apply), now and again once the
write has committed, as the configuration's state is. Without Redis they are read from the
database on every call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.core.cache import cache
from django.db import transaction

from gpuconfig_site.hosts import host_key
from gpuconfig_site.read_memo import cache_read_many, render_kept
from gpuconfig_site.redis_health import REDIS_DOWN

RUNS_STATE_KEY = "assignments:runs-state"
RUNS_READ_TTL = 60  # at most, in case a bump was lost while Redis was away

T = TypeVar("T")


def _bump() -> None:
    try:
        try:
            cache.incr(host_key(RUNS_STATE_KEY))
        except ValueError:  # not set yet (or evicted)
            cache.add(host_key(RUNS_STATE_KEY), 1, None)
    except REDIS_DOWN:
        pass


def runs_state_bump() -> None:
    """Make the kept run reads stale: now, so this process reads the change at once, and
    once the current transaction commits, so a reader that kept the old rows meanwhile
    (under the new state) reads the new ones."""
    _bump()
    transaction.on_commit(_bump)


def runs_read_cached(name: str, build: Callable[[], T]) -> T:
    """``build()``, a pure function of the ``ApplyRun`` rows, kept under the runs state (one
    cache round trip when no run changed; one per page render)."""
    return render_kept(f"runs:{name}", lambda: _runs_read(name, build))


def _runs_read(name: str, build: Callable[[], T]) -> T:
    key, runs = host_key(f"assignments:runs-read:{name}"), host_key(RUNS_STATE_KEY)
    try:
        found = cache_read_many([runs, key])
    except REDIS_DOWN:
        return build()
    state = found.get(runs, 0)
    kept = found.get(key)
    if kept is not None and kept[0] == state:
        return kept[1]
    value = build()
    try:
        cache.set(key, (state, value), RUNS_READ_TTL)
    except REDIS_DOWN:
        pass
    return value
