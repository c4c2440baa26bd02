"""Redis, the live store (cache, progress, locks) and the Celery broker: telling when it is away.

Pages degrade when it is (a banner, the database parts still shown); API calls that need it
answer 503 naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gpuconfig_site.read_memo import cache_read, share

logger = logging.getLogger(__name__)

PING_KEY = share("live:ping")  # read once per page render


def redis_location() -> str:
    """Where Redis is expected, without any password the URL may hold."""
    url = urlsplit(settings.REDIS_URL)
    return f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"


# What the cache (redis-py) and the Celery broker (kombu) raise when Redis cannot be reached.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OperationalError)


def is_redis_down(exc: BaseException) -> bool:
    return isinstance(exc, REDIS_DOWN)


def unknown_while_redis_is_down(default: Any = None) -> Callable:
    """For reads of what the cache last held (last scan, live container state, progress): while
    Redis is away they answer ``default`` (unknown) instead of failing the page that shows
    them; the page's banner says why. Writes are never wrapped: they fail, and say so."""

    def decorate(read: Callable) -> Callable:
        @wraps(read)
        def tolerant(*args, **kwargs):
            try:
                return read(*args, **kwargs)
            except REDIS_DOWN as exc:
                logger.warning("Redis is not reachable (%s); %s is unknown", exc, read.__name__)
                return default() if callable(default) else default

        return tolerant

    return decorate


def redis_down_detail(exc: BaseException | str) -> str:
    return (
        f"Redis at {redis_location()} is not reachable ({exc}); live progress, apply and "
        "re-scan need it. Start Redis (or `make run` again) and retry."
    )


def redis_problem() -> str:
    """Why Redis cannot be used now, or "" when it answers (or is not in use)."""
    if settings.GPUCONFIG_EMBEDDED:
        return ""
    try:
        cache_read(PING_KEY)
    except REDIS_DOWN as exc:
        logger.warning("Redis is not reachable: %s", exc)
        return redis_down_detail(exc)
    return ""


def redis_banner(request) -> dict:
    """Context processor: every page shows a banner while Redis is away."""
    return {"redis_problem": redis_problem()}
