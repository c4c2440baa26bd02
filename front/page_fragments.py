"""Front room. Rendered parts of the settings page kept in the cache while what they show is
unchanged.

The plan (strategy, assignment table, planned VRAM per GPU) and its problems are the costliest
parts of the page to render, and on a plain ``GET /settings/gpu/`` they are a pure function of
the saved configuration as read (``planning_input_cached``: its state moves with every write
of a configuration row, a scan, a GPU change or a changed base compose file), the needs mode
and whether the user may change anything. Their HTML is kept under a key made of exactly
those; a page showing a form being edited, a notice or errors renders them afresh
(``config_fragment_key`` answers None). The CSRF token is outside the kept parts.
"""

from __future__ import annotations

import hashlib

from django.core.cache import cache

from assignments.selectors import PlanningInput
from gpuconfig_site.hosts import host_key
from gpuconfig_site.redis_health import REDIS_DOWN

FRAGMENT_TTL = 60  # at most, in case a bump was lost while Redis was away
_PREFIX = "page-fragment:"


def config_fragment_key(
    *, planning: PlanningInput, can_change: bool, saved_strategy: str
) -> str | None:
    """The key of the plan's rendered parts for the saved configuration as ``planning`` read
    it, or None when it was not read from the cache (no state to key on)."""
    if not planning.read_state:
        return None
    raw = repr((planning.read_state, planning.needs, can_change, saved_strategy))
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def fragment_get(name: str, key: str) -> str | None:
    try:
        return cache.get(host_key(f"{_PREFIX}{name}:{key}"))
    except REDIS_DOWN:
        return None


def fragment_set(name: str, key: str, html: str) -> None:
    try:
        cache.set(host_key(f"{_PREFIX}{name}:{key}"), html, FRAGMENT_TTL)
    except REDIS_DOWN:
        pass
