"""django-axes' database handler, with the lockout check skipped for clients that never failed.

Every request carrying an API key asks django-axes whether its address is locked out, and the
database handler answers with an aggregate query: on ``GET /api/system/gpus`` that query was
the largest part of the request. Almost every caller has never failed a sign-in, so this
handler notes each address that fails in the cache (Redis), for as long as django-axes keeps
counting its failures, and only asks the database about addresses noted there.

The database stays the record: failures, lockouts and resets are django-axes' own. When Redis
does not answer, the check goes to the database as before. Redis losing its data (a restart:
it keeps nothing on disk here) forgets the notes: an address already locked out is let
through until its next failure, which notes it again and finds the lockout in the database.

The note is read with the request's other cache reads, in one round trip
(``gpuconfig_site.read_memo``); a failure noted during the request is read back from Redis.
"""

from __future__ import annotations

import ipaddress
import logging

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_cool_off
from django.core.cache import cache

from gpuconfig_site.read_memo import cache_read, forget
from gpuconfig_site.redis_health import REDIS_DOWN

logger = logging.getLogger(__name__)

_NOTE_PREFIX = "axes:failed:"


def _note_key(request) -> str | None:
    address = getattr(request, "axes_ip_address", None)
    return f"{_NOTE_PREFIX}{address}" if address else None


class CachedLockoutHandler(AxesDatabaseHandler):
    def get_failures(self, request, credentials=None) -> int:
        key = _note_key(request)
        if key is not None:
            try:
                if cache_read(key) is None:
                    return 0
            except REDIS_DOWN:
                pass  # the database answers alone
        return super().get_failures(request, credentials)

    def user_login_failed(self, sender, credentials, request=None, **kwargs):
        # Noted before django-axes counts the failure: its own lockout decision reads
        # get_failures, which must not skip the database from this failure on.
        key = _note_key(request)
        if key is not None:
            cool_off = get_cool_off(request)
            timeout = None if cool_off is None else int(cool_off.total_seconds()) + 60
            try:
                cache.set(key, 1, timeout)
                forget(key)  # read again, from Redis, by the lockout decision below
            except REDIS_DOWN:
                logger.warning("Redis is down: a failed sign-in is recorded in the database only")
        return super().user_login_failed(sender, credentials, request, **kwargs)


def client_address(request) -> str | None:
    """The client's address for django-axes (``AXES_CLIENT_IP_CALLABLE``): ``REMOTE_ADDR``,
    unless it is one of ``GPUCONFIG_TRUSTED_PROXIES``; then the right-most address of
    ``X-Forwarded-For`` that is not a trusted proxy (entries to its left could be sent by the
    client itself, so they are never believed)."""
    from django.conf import settings

    remote = request.META.get("REMOTE_ADDR")
    trusted = settings.GPUCONFIG_TRUSTED_PROXIES
    if not trusted or not _in_networks(remote, trusted):
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _in_networks(hop, trusted):
            return hop if _is_address(hop) else remote
    return remote


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _in_networks(address: str | None, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    for entry in networks:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False
