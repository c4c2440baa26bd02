"""`make bench` leaves the machine as it found it: the test engine it started is stopped again,
also when a section fails; an engine that was already running is left running.

The engine script and the benchmark are stand-ins that record their calls (``TEST_DOCKERD``
and ``PY`` are the Makefile's own variables): what is under test is the target's logic, not
the engine, which other test runs share.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FAKE_DOCKERD = """#!/bin/sh
echo "dockerd $1" >> "{log}"
case "$1" in
    running) [ -f "{state}" ] ;;
    start) touch "{state}" ;;
    stop) rm -f "{state}" ;;
    env) echo "export DOCKER_HOST=unix://{state}" ;;
esac
"""
FAKE_PYTHON = """#!/bin/sh
echo "python $* DOCKER_HOST=$DOCKER_HOST" >> "{log}"
exit {status}
"""


def make_bench(tmp_path: Path, *, running: bool, status: int = 0) -> tuple[int, list[str], bool]:
    log, state = tmp_path / "calls.log", tmp_path / "engine-up"
    if running:
        state.touch()
    dockerd = tmp_path / "dockerd.sh"
    dockerd.write_text(FAKE_DOCKERD.format(log=log, state=state))
    python = tmp_path / "python.sh"
    python.write_text(FAKE_PYTHON.format(log=log, status=status))
    stamp = tmp_path / "installed"
    stamp.touch()
    done = subprocess.run(
        ["make", "-s", "bench", f"TEST_DOCKERD=sh {dockerd}", f"PY=sh {python}",
         f"STAMP={stamp}", "BENCH=api"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.returncode, log.read_text().splitlines(), state.exists()


@pytest.fixture(autouse=True)
def _make_installed():
    if shutil.which("make") is None:
        pytest.fail("make is needed to run `make bench`")


def test_the_engine_bench_started_is_stopped_afterwards(tmp_path):
    code, calls, up = make_bench(tmp_path, running=False)
    assert code == 0
    assert calls == [
        "dockerd running",
        "dockerd start",
        "dockerd env",
        f"python -m bench api DOCKER_HOST=unix://{tmp_path / 'engine-up'}",
        "dockerd stop",
    ]
    assert not up


def test_an_engine_that_was_running_is_left_running(tmp_path):
    code, calls, up = make_bench(tmp_path, running=True)
    assert code == 0
    assert "dockerd stop" not in calls
    assert up


def test_a_failing_bench_still_stops_the_engine_and_fails(tmp_path):
    code, calls, up = make_bench(tmp_path, running=False, status=3)
    assert code != 0
    assert calls[-1] == "dockerd stop"
    assert not up
