"""Front room. Rendered parts of the settings page kept in the cache while what they show is
unchanged.

The plan (strategy, assignment table, planned VRAM per GPU) and its problems are the costliest
parts of the page to render, and on a plain ``GET /settings/gpu/`` they are a pure function of
the saved configuration as read (``planning_input_cached``: its state moves with every write
of a configuration row, a scan, a GPU change or a changed base compose file), the needs mode
and whether the user may change anything. Their HTML is kept under a key made of exactly
those; a page showing a form being edited, a notice or errors renders them afresh
(``config_fragment_key`` answers None). The CSRF token is outside the kept parts.

With the parts, the number of problems they show is kept (the status strip counts them): a page
that finds all of them kept builds neither the form nor the table.
"""

from __future__ import annotations

import hashlib

from django.core.cache import cache

from assignments.selectors import PlanningInput
from gpuconfig_site.hosts import host_key
from gpuconfig_site.read_memo import cache_read
from gpuconfig_site.redis_health import REDIS_DOWN

FRAGMENT_TTL = 60  # at most, in case a bump was lost while Redis was away
_PREFIX = "page-fragment:"
# The parts of the saved plan the page renders from the cache, by their fragment names.
PLAN_FRAGMENTS = ("warnings", "assignments")
_PROBLEM_COUNT = "problem-count"


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
        return cache_read(host_key(f"{_PREFIX}{name}:{key}"))
    except REDIS_DOWN:
        return None


def fragment_set(name: str, key: str, html: str | int) -> None:
    try:
        cache.set(host_key(f"{_PREFIX}{name}:{key}"), html, FRAGMENT_TTL)
    except REDIS_DOWN:
        pass


def problem_count_set(key: str, count: int) -> None:
    """Keep how many problems the plan's parts under ``key`` show."""
    fragment_set(_PROBLEM_COUNT, key, count)


def plan_fragments_get(key: str) -> tuple[dict[str, str], int] | None:
    """The plan's rendered parts under ``key`` by name, and their problem count, when all are
    kept (read with the request's other cache reads); else None."""
    count = fragment_get(_PROBLEM_COUNT, key)
    if count is None:
        return None
    html = {name: fragment_get(name, key) for name in PLAN_FRAGMENTS}
    if any(part is None for part in html.values()):
        return None
    return html, count
