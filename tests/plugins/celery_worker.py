"""A real Celery worker (and beat) process against the real Redis, sharing the test database.

Tests that use it need committed data (``transactional_db``): the worker is another process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The URL of the test database this process uses, for the worker to open the same one."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    auth = f"{user}:{db['PASSWORD']}@" if db.get("PASSWORD") else f"{user}@"
    return f"postgres://{auth}{host}:{port}/{db['NAME']}"


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"Celery worker did not start:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the worker and its children at once, as a crash or OOM kill would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _worker_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    s = django_settings
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "gpuconfig_site.settings",
            "DATABASE_URL": database_url(),
            "REDIS_URL": s.REDIS_URL,
            "GPUCONFIG_CONFIG_DIR": str(s.GPUCONFIG_CONFIG_DIR),
            "GPUCONFIG_GPU_BACKEND": s.GPUCONFIG_GPU_BACKEND,
            "GPUCONFIG_HEALTH_TIMEOUT": str(s.GPUCONFIG_HEALTH_TIMEOUT),
            "GPUCONFIG_SCAN_INTERVAL": str(s.GPUCONFIG_SCAN_INTERVAL),
            "GPUCONFIG_DEVICE_ID_FORMAT": s.GPUCONFIG_DEVICE_ID_FORMAT,
            "PYTHONUNBUFFERED": "1",
        }
    )
    for name in ("GPUCONFIG_SIMULATED_GPUS", "GPUCONFIG_COMPOSE_PROJECT"):
        value = getattr(s, name)
        if value:
            env[name] = str(value)
        else:
            env.pop(name, None)
    env.update(extra)
    return env


@pytest.fixture
def celery_worker_factory(tmp_path, live_db):
    """Starts real worker processes; all are stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(
        *, beat: bool = False, env: dict[str, str] | None = None, name: str = "w"
    ) -> WorkerProcess:
        log_path = tmp_path / f"celery-{name}-{len(started)}.log"
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "gpuconfig_site",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"{name}{len(started)}@%h",
        ]
        if beat:
            cmd += ["--beat", "--schedule", str(tmp_path / f"beat-{len(started)}")]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=_worker_env(env or {}),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(proc, log_path)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def real_worker(celery_worker_factory):
    """One running worker (no beat); tasks from this test go to it through Redis."""
    return celery_worker_factory()
