"""Site room: a daemon thread that does one thing every few seconds in a worker's main process.

The worker's heartbeat, its recovery watch and a fleet host's heartbeat each run one. A tick
that raises is logged and the next tick comes as usual: a database or broker away for a moment
never stops the thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class PeriodicThread:
    """Calls ``tick()`` every ``interval()`` seconds (first at once when ``immediate``) in one
    daemon thread, until ``stop()``; ``start()`` again while it runs does nothing.

    Made once per kind of work at import; ``start(tick)`` gives the tick when it depends on what
    the worker's start brings (its Celery app)."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], object] | None,
        interval: Callable[[], float],
        *,
        immediate: bool = False,
    ) -> None:
        self.name = name
        self.tick = tick
        self.interval = interval
        self.immediate = immediate
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _tick(self) -> None:
        try:
            self.tick()
        except Exception:
            logger.warning(
                "%s: this tick failed; the next one comes as usual", self.name, exc_info=True
            )

    def _run(self, stop: threading.Event) -> None:
        if self.immediate:
            self._tick()
        while not stop.wait(self.interval()):
            self._tick()

    def start(self, tick: Callable[[], object] | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        if tick is not None:
            self.tick = tick
        if self.tick is None:
            raise ValueError(f"{self.name}: nothing to do every interval (no tick)")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
