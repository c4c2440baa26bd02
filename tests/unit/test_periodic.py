"""The periodic thread the worker's heartbeat, its recovery watch and a host's heartbeat run on."""

from __future__ import annotations

import threading

import pytest

from gpuconfig_site.periodic import PeriodicThread


def test_it_ticks_at_once_when_asked_and_keeps_ticking_after_a_tick_that_raises():
    ticks: list[int] = []
    third = threading.Event()

    def tick() -> None:
        ticks.append(len(ticks))
        if len(ticks) == 1:
            raise ConnectionError("the broker is away for a moment")
        if len(ticks) == 3:
            third.set()

    thread = PeriodicThread("test-periodic", tick, lambda: 0.01, immediate=True)
    thread.start()
    thread.start()  # a second start while it runs adds no thread
    assert third.wait(5)
    thread.stop()
    assert [t.name for t in threading.enumerate()].count("test-periodic") <= 1
    assert ticks[:3] == [0, 1, 2]


def test_stopped_it_ticks_no_more_and_starts_again():
    ticked = threading.Event()
    thread = PeriodicThread("test-periodic-2", ticked.set, lambda: 0.01)
    thread.start()
    assert ticked.wait(5)
    thread.stop()
    thread._thread.join(5)
    assert not thread.is_alive()
    ticked.clear()
    thread.start()
    assert ticked.wait(5)
    thread.stop()


def test_a_thread_made_at_import_takes_its_tick_when_started_and_refuses_to_start_without_one():
    ticked = threading.Event()
    thread = PeriodicThread("test-periodic-3", None, lambda: 0.01, immediate=True)
    with pytest.raises(ValueError, match="no tick"):
        thread.start()
    thread.start(ticked.set)
    try:
        assert ticked.wait(2)
    finally:
        thread.stop()
