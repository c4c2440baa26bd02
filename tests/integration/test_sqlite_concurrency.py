"""The default database (SQLite) under concurrent writers, through gunicorn as `make run` serves
it: concurrent PUTs, and PUTs beside scans, all succeed (WAL, a busy timeout and IMMEDIATE
transactions), each PUT recorded as its own ConfigVersion."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REFERENCE_GPUS, wait_for

pytestmark = [pytest.mark.integration]

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "concurrency-key-0123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    def __init__(self, base: str, db: Path):
        self.base = base
        self.db = db

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"X-API-Key": KEY, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as res:
                return res.status, json.loads(res.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, {"detail": raw[:300].decode(errors="replace")}

    def versions(self) -> int:
        with sqlite3.connect(self.db) as conn:
            return conn.execute("select count(*) from assignments_configversion").fetchone()[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """gunicorn (4 workers x 2 threads) on a fresh SQLite file with the reference GPUs scanned;
    scans run inside the web process (eager), as they do when no worker answers."""
    tmp_path = tmp_path_factory.mktemp("sqlite-site")
    db = tmp_path / "gpuconfig.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}",
        "GPUCONFIG_VAR_DIR": str(tmp_path),
        "GPUCONFIG_CONFIG_DIR": str(tmp_path / "config"),
        "GPUCONFIG_SIMULATED_GPUS": str(REFERENCE_GPUS),
        "GPUCONFIG_API_KEY": KEY,
        "GPUCONFIG_CACHE_PREFIX": f"concurrency-{os.getpid()}",
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "GPUCONFIG_LOG_LEVEL": "WARNING",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
    }
    manage = [sys.executable, "manage.py"]
    for command in (["migrate", "--noinput"], ["detect_gpus"]):
        subprocess.run([*manage, *command], cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    port = _free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "gpuconfig_site.wsgi", "--bind", f"127.0.0.1:{port}"]
        + ["--workers", "4", "--threads", "2", "--timeout", "120"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    running = Site(f"http://127.0.0.1:{port}", db)

    def up():
        try:
            return running.call("GET", "/api/system/gpus")[0] == 200
        except OSError:
            return False

    try:
        wait_for(up, timeout=60, what="gunicorn to answer")
        yield running
    finally:
        server.terminate()
        server.wait(20)
        log.close()


def _together(calls) -> list[tuple[int, dict]]:
    """Run every call at the same moment, each in its own thread; returns the answers in order."""
    answers: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i, call):
        barrier.wait()
        try:
            answers[i] = call()
        except OSError as exc:
            answers[i] = (0, {"detail": str(exc)})

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def _put_budget(site: Site, gb: float):
    body = {
        "assignments": [{"service": "ai-enrichment", "gpu_index": 0, "vram_budget_override": gb}]
    }
    return lambda: site.call("PUT", "/api/system/gpu-config", body)


def test_twenty_concurrent_puts_all_succeed(site):
    before = site.versions()
    answers = _together([_put_budget(site, 1 + i / 10) for i in range(20)])
    failures = [a for a in answers if a[0] != 200]
    assert failures == [], failures
    assert site.versions() == before + 20


def test_puts_beside_scans_all_succeed(site):
    before = site.versions()
    # Budgets none of the previous test's saves used: a PUT of the saved value is a no-op
    # that records no version.
    puts = [_put_budget(site, 4 + i / 10) for i in range(12)]
    scans = [lambda: site.call("POST", "/api/system/gpu-config/detect") for _ in range(8)]
    answers = _together(puts + scans)
    failures = [a for a in answers if a[0] != 200 or a[1].get("error")]
    assert failures == [], failures
    assert site.versions() >= before + 12
