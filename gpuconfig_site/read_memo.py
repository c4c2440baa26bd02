"""Cache reads shared by the parts of one request.

A request is built from parts that each read a few cache entries on their own: the settings
page reads the stored engine state, the last scan, the demo runtime switch, the Redis ping,
the configuration's, the inventory's and the runs' states with what is kept under them, and
its rendered fragments; ``GET /api/system/gpus`` reads django-axes' failure note of the client
before the inventory. One round trip to Redis each added up to a dozen per page.

Inside ``reads_shared(name)`` (every GET and HEAD, through ``SharedReadsMiddleware``, and every
render of the page) those reads go through ``cache_read`` and ``cache_read_many``: the first
one fetches, in one round trip, what it asks for together with every entry the last request
of the same name read (or ``SHARED_KEYS`` when there was none yet), and every later read of an
entry fetched is answered from that copy. A request whose parts read the same entries as the
one before it (the steady state: nothing changed in between) costs one round trip; an entry
not fetched yet costs one more, and is fetched with the others next time. Outside it (the
worker, a write) ``cache_read`` is a plain ``cache.get``.

The copy is the request's view of the cache as it started: every value kept under a state is
stored with that state, so a request reads a consistent set, as one that ran a moment earlier
would. A part that writes one of the entries during the request (a refresh run inline, a
failed sign-in noted) calls ``forget`` so the next read goes to Redis again. When Redis is down
the fetch fails and nothing is kept: each read goes to Redis as before, and fails (or is
tolerated) as before.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from contextlib import ContextDecorator

from django.core.cache import cache

from gpuconfig_site.hosts import host_key

# The entries a page render reads several times; registered by the modules that own them.
SHARED_KEYS: list[str] = []
# Those of them that belong to one host: read and written as ``stored(key)``.
PER_HOST_KEYS: set[str] = set()
# Kept per process: the entries the last request of each name read (bounded: names are paths).
LEARNED_MAX = 256
_learned: dict[str, tuple[str, ...]] = {}
_shared: contextvars.ContextVar[_Reads | None] = contextvars.ContextVar("read_memo", default=None)


class _Reads:
    """One request's copy of the entries fetched, and the ones its parts asked for."""

    __slots__ = ("built", "fetched", "kept", "name", "read")

    def __init__(self, name: str):
        self.name = name
        self.kept: dict[str, object] = {}
        self.built: dict[str, object] = {}
        self.read: set[str] = set()
        self.fetched = False


def share(key: str, *, per_host: bool = False) -> str:
    """Register ``key`` as read once per render; returns it (for the owner's constant).
    ``per_host``: the entry belongs to one host, and is kept under ``stored(key)``."""
    if key not in SHARED_KEYS:
        SHARED_KEYS.append(key)
    if per_host:
        PER_HOST_KEYS.add(key)
    return key


def stored(key: str) -> str:
    """The cache key a registered entry is kept under for the host at hand."""
    return host_key(key) if key in PER_HOST_KEYS else key


class reads_shared(ContextDecorator):  # noqa: N801 - used as a decorator, like contextlib's
    """Within it, ``cache_read`` and ``cache_read_many`` share one fetch (see the module).
    Inside another one it changes nothing: the outer request goes on."""

    def __init__(self, name: str = ""):
        self.name = name

    def _recreate_cm(self):
        # A fresh one per call: a decorated function runs in many threads at once.
        return type(self)(self.name)

    def __enter__(self):
        self._token = None
        if _shared.get() is None:
            self._token = _shared.set(_Reads(self.name))
        return self

    def __exit__(self, *exc):
        if self._token is not None:
            reads = _shared.get()
            _shared.reset(self._token)
            if reads is not None and reads.name and reads.read:
                if reads.name not in _learned and len(_learned) >= LEARNED_MAX:
                    _learned.clear()
                _learned[reads.name] = tuple(reads.read)
        return False


def cache_read_many(keys: Iterable[str]) -> dict:
    """``cache.get_many(keys)``, answered from the request's shared fetch when inside one."""
    keys = list(keys)
    reads = _shared.get()
    if reads is None:
        return cache.get_many(keys)
    kept = reads.kept
    missing = [key for key in keys if key not in kept]
    if missing:
        if not reads.fetched:
            ahead = _learned.get(reads.name) or [stored(key) for key in SHARED_KEYS]
            missing += [key for key in ahead if key not in kept and key not in missing]
        found = cache.get_many(missing)  # raises while Redis is down: nothing is kept
        reads.fetched = True
        for key in missing:
            kept[key] = found.get(key)
    reads.read.update(keys)
    return {key: kept[key] for key in keys if kept[key] is not None}


def cache_read(key: str):
    """``cache.get(key)`` of a registered entry (for the host at hand), answered from the
    request's shared fetch when inside one."""
    key = stored(key)
    if _shared.get() is None:
        return cache.get(key)
    return cache_read_many([key]).get(key)


def forget(key: str) -> None:
    """The next read of ``key`` in this request goes to Redis again (it was written); the
    other entries fetched keep their copy."""
    reads = _shared.get()
    if reads is not None:
        reads.kept.pop(stored(key), None)


def render_kept(name: str, build):
    """``build()``, once per request for ``name`` (every call outside one builds)."""
    reads = _shared.get()
    if reads is None:
        return build()
    if name not in reads.built:
        reads.built[name] = build()
    return reads.built[name]


class SharedReadsMiddleware:
    """Every GET and HEAD request reads the cache through one shared fetch, named by its path
    (what the last request of that path read is fetched with its first read)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        # Named by path and host: another host's page reads the same entries under its keys.
        host = request.GET.get("host") or request.headers.get("X-GPUConfig-Host") or ""
        with reads_shared(f"{request.path}@{host[:63]}"):
            return self.get_response(request)
