"""Fault injection for the chaos tests: a worker that SIGKILLs itself at a chosen engine call.

``ChaosDockerRuntime`` is a ``DockerRuntime`` that a worker is given through
``GPUCONFIG_CONTAINER_RUNTIME=tests.plugins.chaos.ChaosDockerRuntime``. When
``GPUCONFIG_CHAOS_KILL`` names a kill point, the worker's whole process group is SIGKILLed (as
a crash or an OOM kill would) right before or right after that engine call of that service's
recreate. Without it the runtime is the plain Docker runtime.

A kill point is ``service:call:occurrence:when``, e.g. ``ai-clip:rename:1:after`` (the first
rename of ai-clip's recreate has returned). Calls are the shared recreate's engine calls
(``applies.runtime.recreate.Engine``), counted per service within its recreate: ``inspect``
1 is the lookup of the old container, 2 and later are the polls of the health wait; the second
``rename`` and ``start`` of a recreate are its rollback's.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from dataclasses import dataclass
from typing import Any

from applies.runtime.docker import DockerRuntime

KILL_ENV = "GPUCONFIG_CHAOS_KILL"
# connect and disconnect: the network steps of a make-before-break move (handover.py).
CALLS = ("stop", "rename", "create_copy", "start", "inspect", "remove", "connect", "disconnect")


@dataclass(frozen=True)
class KillPoint:
    service: str
    call: str
    occurrence: int
    when: str  # "before" or "after"

    def __str__(self) -> str:
        return f"{self.service}:{self.call}:{self.occurrence}:{self.when}"

    @classmethod
    def parse(cls, text: str) -> KillPoint:
        service, call, occurrence, when = text.rsplit(":", 3)
        if call not in CALLS or when not in ("before", "after"):
            raise ValueError(f"not a kill point: {text!r}")
        return cls(service, call, int(occurrence), when)


def _steps(service: str, *, rollback: bool) -> list[KillPoint]:
    """Every kill point of one service's recreate, in the order the recreate reaches them."""
    calls = [
        ("stop", 1),
        ("rename", 1),
        ("create_copy", 1),
        ("start", 1),
        ("inspect", 2),  # the first poll of the health wait
        ("inspect", 3),  # mid-health-wait
    ]
    if rollback:
        # The health wait fails; the rollback removes the copy, renames the old one back and
        # starts it.
        calls += [("remove", 1), ("rename", 2), ("start", 2)]
    else:
        calls += [("remove", 1)]  # the old container, once the copy is healthy
    return [KillPoint(service, call, n, when) for call, n in calls for when in ("before", "after")]


def kill_points(moving: list[str], rolling_back: list[str]) -> list[KillPoint]:
    """Every kill point of an apply that moves ``moving`` (healthy) and ``rolling_back``."""
    points = []
    for service in moving:
        points += _steps(service, rollback=False)
    for service in rolling_back:
        points += _steps(service, rollback=True)
    return points


def kill_schedule(points: list[KillPoint], count: int, *, seed: int) -> list[KillPoint]:
    """``count`` kill points: every point once (in a seeded order), then seeded draws."""
    rng = random.Random(seed)
    schedule: list[KillPoint] = []
    while len(schedule) < count:
        batch = list(points)
        rng.shuffle(batch)
        schedule += batch
    return schedule[:count]


class _KillingEngine:
    """Wraps an engine connection; kills the process group at the configured call."""

    def __init__(self, engine: Any, point: KillPoint, seen: dict[str, dict[str, int]]) -> None:
        self._api = engine
        self._point = point
        self._seen = seen

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if name not in CALLS or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            service = getattr(_current, "service", None)
            hit = False
            if service == self._point.service and name == self._point.call:
                counts = self._seen.setdefault(service, {})
                counts[name] = counts.get(name, 0) + 1
                hit = counts[name] == self._point.occurrence
            if hit and self._point.when == "before":
                _die()
            result = attr(*args, **kwargs)
            if hit:
                _die()
            return result

        return call


_current = threading.local()


def _die() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


class ChaosDockerRuntime(DockerRuntime):
    """The Docker runtime, killing its worker at ``GPUCONFIG_CHAOS_KILL`` (see the module)."""

    _seen: dict[str, dict[str, int]] = {}

    @contextlib.contextmanager
    def connect(self):
        with super().connect() as engine:
            raw = os.environ.get(KILL_ENV)
            yield _KillingEngine(engine, KillPoint.parse(raw), self._seen) if raw else engine

    def recreate(self, service: str, **kwargs: Any):
        _current.service = service
        try:
            return super().recreate(service, **kwargs)
        finally:
            _current.service = None
