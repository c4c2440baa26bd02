"""Site, hosts: which GPU host the code at hand speaks for.

Every GPU, saved configuration, assignment, version and apply run belongs to one host (a
``host`` column holding the host's name). The host a request, a task or a command works on is
held in a context variable, set at the edges: by ``fleet.middleware.HostMiddleware`` from
``?host=`` (else the default host), by the tasks from the message that carried them, by
``--host`` in the commands. Code in between reads ``host_name()`` and never passes hosts
around; ``HostScopedManager`` (each model's ``objects``) keeps its queries to that host, and
``all_hosts`` is the unscoped manager for fleet-wide reads.

With nothing set, the code works on this machine's own host (``GPUCONFIG_HOST_NAME``): the
worker's periodic scans, repairs and file syncs are this machine's. Requests and commands that
name no host get the default host (``GPUCONFIG_DEFAULT_HOST``, else this machine's). A single
box never sets anything, so it works as it always did, cache keys included.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import models

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("host", default=None)


def default_host_name() -> str:
    """The host answered for when none is named: ``GPUCONFIG_DEFAULT_HOST``, else this
    machine's own."""
    return settings.GPUCONFIG_DEFAULT_HOST or settings.GPUCONFIG_HOST_NAME


def host_name() -> str:
    """The host the code at hand works on (the model's default for the ``host`` column)."""
    return _current.get() or settings.GPUCONFIG_HOST_NAME


def host_is_local() -> bool:
    """Whether the host at hand is this machine (its NVML, its container engine)."""
    return host_name() == settings.GPUCONFIG_HOST_NAME


@contextmanager
def host_scope(name: str | None) -> Iterator[str]:
    """Work on ``name`` inside the block (None: this machine's own host)."""
    token = _current.set(name or None)
    try:
        yield host_name()
    finally:
        _current.reset(token)


def host_set(name: str | None) -> contextvars.Token:
    """Work on ``name`` until ``host_reset`` (for middleware and task signals, which cannot
    hold a ``with`` block open)."""
    return _current.set(name or None)


def host_reset(token: contextvars.Token) -> None:
    _current.reset(token)


def host_config_dir() -> Path:
    """Where the host at hand's generated files go: ``GPUCONFIG_CONFIG_DIR`` for this machine's
    own host (its compose stack reads them there), ``hosts/<name>/`` under it for another host
    (the centre's copy: that host's stack is on that host, and this machine's is never touched
    by another host's plan)."""
    base = Path(settings.GPUCONFIG_CONFIG_DIR)
    return base if host_is_local() else base / "hosts" / host_name()


def host_key(key: str) -> str:
    """A cache key for state that belongs to one host. This machine's own host keeps the bare
    key, so a single box's cache is what it always was."""
    name = host_name()
    return key if name == settings.GPUCONFIG_HOST_NAME else f"{key}@{name}"


def host_field(**kwargs) -> models.CharField:
    """The ``host`` column every per-host model carries: the host's name, filled from the
    host at hand. A name, not a foreign key: the inventory knows nothing of the fleet's
    tables, and rows survive a flush of the host registry."""
    kwargs.setdefault("help_text", "The GPU host it belongs to.")
    kwargs.setdefault("db_index", not kwargs.get("unique", False))
    return models.CharField(max_length=63, default=host_name, editable=False, **kwargs)


class HostScopedManager(models.Manager):
    """The model's rows on the host at hand (``host_name()``). ``through`` names the relation
    that carries the host, for rows that have none of their own (a GPU's samples).

    Declared after ``all_hosts`` (the unscoped default manager), so that the admin, related
    objects and Django's own reads see every host, and ``objects`` is the scoped one."""

    through = ""

    def get_queryset(self) -> models.QuerySet:
        lookup = f"{self.through}__host" if self.through else "host"
        return super().get_queryset().filter(**{lookup: host_name()})
