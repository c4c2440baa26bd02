"""A ``redis-server`` of one test alone, on a free port, that the test may stop and start: the
shared Redis of the other tests is never touched."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import redis as redis_py

from tests.conftest import wait_for


def _free_port(start: int = 6391) -> int:
    for port in range(start, start + 200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port for a private Redis")


def _pings(url: str) -> bool:
    try:
        return bool(redis_py.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis_py.RedisError:
        return False


class PrivateRedis:
    """A private ``redis-server`` whose data is kept across a restart (as a real one's snapshot
    keeps it)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "3600 1",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _pings(self.url), timeout=10, what="the private Redis to answer")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
