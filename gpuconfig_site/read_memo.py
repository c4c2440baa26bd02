"""Cache reads shared by the parts of one page render.

The settings page is built from parts that each read the same few cache entries on their own
(the stored engine state, the last scan, the demo runtime switch, the Redis ping): a dozen
round trips to Redis for four keys. Inside ``reads_shared()`` those entries are read once, in
one round trip, the first time any of them is asked for, and every later read in the same
render is answered from that copy. Outside it (the API, the worker) ``cache_read`` is a plain
``cache.get``.

A part that writes one of the entries during the render (a refresh run inline) calls
``forget`` so the next read goes to Redis again. When Redis is down the shared read fails and
nothing is kept: each read goes to Redis as before, and fails (or is tolerated) as before.
"""

from __future__ import annotations

import contextvars
from contextlib import ContextDecorator

from django.core.cache import cache

from gpuconfig_site.hosts import host_key

# The entries a page render reads several times; registered by the modules that own them.
SHARED_KEYS: list[str] = []
# Those of them that belong to one host: read under ``host_key`` (a render is for one host).
PER_HOST_KEYS: set[str] = set()
_MISSING = object()
_shared: contextvars.ContextVar[dict | None] = contextvars.ContextVar("read_memo", default=None)


def share(key: str, *, per_host: bool = False) -> str:
    """Register ``key`` as read once per render; returns it (for the owner's constant).
    ``per_host``: the entry belongs to one host, and is read and written as ``stored(key)``."""
    if key not in SHARED_KEYS:
        SHARED_KEYS.append(key)
    if per_host:
        PER_HOST_KEYS.add(key)
    return key


def stored(key: str) -> str:
    """The cache key ``key`` is kept under for the host at hand."""
    return host_key(key) if key in PER_HOST_KEYS else key


class reads_shared(ContextDecorator):  # noqa: N801 - used as a decorator, like contextlib's
    """Within it, ``cache_read`` of a registered key reads all of them once."""

    def _recreate_cm(self):
        # A fresh one per call: a decorated function runs in many threads at once.
        return type(self)()

    def __enter__(self):
        self._token = _shared.set({})
        return self

    def __exit__(self, *exc):
        _shared.reset(self._token)
        return False


def cache_read(key: str):
    """``cache.get(key)``, answered from the render's shared read when inside one."""
    kept = _shared.get()
    if kept is None or key not in SHARED_KEYS:
        return cache.get(stored(key))
    value = kept.get(key, _MISSING)
    if value is _MISSING:
        names = {stored(name): name for name in SHARED_KEYS}
        found = cache.get_many(list(names))  # raises while Redis is down: nothing is kept
        for actual, name in names.items():
            kept.setdefault(name, found.get(actual))
        value = kept[key]
    return value


def forget(key: str) -> None:
    """The next ``cache_read`` of ``key`` in this render goes to Redis again (it was written);
    the other entries read keep their copy."""
    kept = _shared.get()
    if kept is not None:
        kept.pop(key, None)


def render_kept(name: str, build):
    """``build()``, once per render for ``name`` (every call outside a render builds)."""
    kept = _shared.get()
    if kept is None:
        return build()
    slot = f"\0built:{name}"
    if slot not in kept:
        kept[slot] = build()
    return kept[slot]
