"""Chaos: the worker SIGKILLed at every step of an apply that moves three services (between the
steps, mid-health-wait and mid-rollback), and Redis killed mid-apply. After each fault every
service runs again within 60 s with no one touching it, nothing is left aside or doubled, and
no run stays ``running``.

``make test`` runs ``GPUCONFIG_CHAOS_POINTS`` (20) kill points of a seeded schedule;
``make chaos`` runs 200 and prints the figure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
import redis

from applies import progress
from applies.runtime.docker import DockerRuntime
from assignments.services import config_save
from gpuconfig_site.celery import app as celery_app
from tests.conftest import wait_for
from tests.integration.recovery_checks import wait_dead, wait_settled, worker_env
from tests.plugins.chaos import kill_points, kill_schedule

pytestmark = [pytest.mark.integration, pytest.mark.docker]

MOVING = ["ai-clip", "ai-florence"]  # each flips between GPU 0 and 1 and gets healthy
ROLLING_BACK = ["ai-llm"]  # moves to the broken GPU 99 and is rolled back


def _next_targets(runtime: DockerRuntime) -> list[dict]:
    targets = [
        {"service": s, "gpu_index": 1 if runtime.inspect(s).device_ids == ("0",) else 0}
        for s in MOVING
    ]
    return targets + [{"service": s, "gpu_index": 99} for s in ROLLING_BACK]


@pytest.mark.timeout(60 + 45 * int(os.environ.get("GPUCONFIG_CHAOS_POINTS", "20")))
def test_the_worker_killed_at_any_step_of_an_apply_recovers(docker_box, celery_worker_factory):
    stack, client = docker_box
    count = int(os.environ.get("GPUCONFIG_CHAOS_POINTS", "20"))
    seed = int(os.environ.get("GPUCONFIG_CHAOS_SEED", "12"))
    schedule = kill_schedule(kill_points(MOVING, ROLLING_BACK), count, seed=seed)
    runtime = DockerRuntime(project=stack.project)
    worker = celery_worker_factory(env=worker_env(schedule[0]))
    times: list[float] = []
    failures: list[str] = []
    for position, point in enumerate(schedule):
        config_save(assignments=_next_targets(runtime))
        res = client.post("/api/system/gpu-config/apply")
        assert res.status_code == 202, (point, res.json())
        assert len(res.json()["restarted_services"]) == 3, (point, res.json())
        killed = wait_dead(worker)
        following = schedule[position + 1] if position + 1 < len(schedule) else None
        # The supervisor's part: a worker starts again (with the next kill point armed).
        worker = celery_worker_factory(env=worker_env(following))
        try:
            times.append(wait_settled(stack, since=killed))
        except AssertionError as exc:
            failures.append(f"{point}: {exc}")
            print(f"  {position + 1}/{len(schedule)} {point}: NOT RECOVERED: {exc}", flush=True)
            if len(failures) >= 3:
                break
        else:
            print(f"  {position + 1}/{len(schedule)} {point}: {times[-1]:.1f} s", flush=True)
    print(
        f"\nchaos: {len(times)}/{len(schedule)} kill points recovered; "
        f"max {max(times, default=0):.1f} s, "
        f"mean {sum(times) / max(len(times), 1):.1f} s from the kill to every service running"
    )
    assert not failures, failures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path, settings):
    """A redis-server of this test's own (never the shared one), used by this process's cache
    and broker and by the workers it starts; killed or stopped at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (install the Debian package redis-server)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: _pings(url), timeout=10, interval=0.05, what="the private redis-server")
    settings.REDIS_URL = url
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": "gpuconfig",
        }
    }
    broker = celery_app.conf.broker_url
    celery_app.conf.broker_url = url
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        celery_app.conf.broker_url = broker
        celery_app._pool = None
        celery_app.amqp._producer_pool = None


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def test_redis_killed_mid_apply_leaves_every_service_running(
    docker_box, private_redis, celery_worker_factory
):
    stack, client = docker_box
    celery_worker_factory(env=worker_env())
    config_save(assignments=_next_targets(DockerRuntime(project=stack.project)))
    op = client.post("/api/system/gpu-config/apply").json()["operation_id"]

    def waiting():
        entries = {e["service"]: e["status"] for e in progress.progress_get(op)}
        return entries.get("ai-llm") == "waiting_health"

    wait_for(waiting, timeout=30, interval=0.05, what="ai-llm to wait for health")
    private_redis.kill()
    private_redis.wait(10)
    killed = time.monotonic()

    wait_settled(stack, since=killed)
