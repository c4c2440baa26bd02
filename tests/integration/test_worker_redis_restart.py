"""The worker outlives its broker: a private Redis server is stopped and started again under a
real Celery worker that holds an unacknowledged countdown message, and the worker carries on.

The shared Redis of the other tests is never touched: each test starts its own
``redis-server`` on a free port and points the worker and this process at it.
"""

from __future__ import annotations

import re
import time

import pytest

from applies.models import ApplyRun
from gpuconfig_site.celery import app
from gpus.models import Gpu
from tests.conftest import wait_for
from tests.plugins.private_redis import PrivateRedis

pytestmark = [pytest.mark.integration]

RESTARTS = 5


@pytest.fixture
def private_redis(tmp_path, settings):
    """A private Redis, used by this process (cache and broker) and by the workers it starts."""
    server = PrivateRedis(tmp_path)
    server.start()
    settings.REDIS_URL = server.url
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "BACKEND": "gpuconfig_site.cache.RedisCache",
            "LOCATION": server.url,
        }
    }
    old_broker = app.conf.broker_url
    app.conf.broker_url = server.url
    app._pool = None
    app.amqp._producer_pool = None
    try:
        yield server
    finally:
        app.conf.broker_url = old_broker
        app._pool = None
        app.amqp._producer_pool = None
        server.stop()


def _received(worker, task: str, count: int) -> bool:
    return len(re.findall(rf"Task {re.escape(task)}\[[-0-9a-f]+\] received", worker.log())) >= count


def test_the_worker_survives_five_redis_restarts_while_holding_a_countdown_message(
    private_redis, celery_worker_factory, simulated_gpus, staff_client, monkeypatch
):
    """Each time, the worker holds an unacknowledged countdown message when Redis stops; it
    stays alive, reconnects when Redis is back, and afterwards a scan and an apply complete."""
    from applies.live import demo_runtime_enable
    from applies.tasks import live_refresh_task
    from assignments.services import config_save
    from gpus.services import gpu_scan_run
    from tests.plugins.dockerd import SERVICES

    # No container engine: the demo runtime stands in (its containers live in this Redis).
    for name in ("DOCKER_HOST", "CONTAINER_HOST"):
        monkeypatch.setenv(name, "unix:///nonexistent/engine.sock")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/nonexistent")
    worker = celery_worker_factory(
        env={
            "REDIS_URL": private_redis.url,
            "DOCKER_HOST": "unix:///nonexistent/engine.sock",
            "CONTAINER_HOST": "unix:///nonexistent/engine.sock",
            "XDG_RUNTIME_DIR": "/nonexistent",
            "GPUCONFIG_CONTAINER_RUNTIME": "auto",
        }
    )
    gpu_scan_run()
    config_save(strategy="manual", assignments=[{"service": s, "gpu_index": 0} for s in SERVICES])
    demo_runtime_enable()

    for attempt in range(1, RESTARTS + 1):
        live_refresh_task.apply_async(countdown=600)
        wait_for(
            lambda n=attempt: _received(worker, "assignments.tasks.live_refresh_task", n),
            timeout=20,
            what="the worker to hold the countdown message",
        )
        private_redis.stop()
        time.sleep(2)  # the worker notices the lost connection
        assert worker.proc.poll() is None, worker.log()[-4000:]
        private_redis.start()
        wait_for(
            lambda n=attempt: worker.log().count(" Connected to ") > n,
            timeout=30,
            what=f"the worker to reconnect after restart {attempt}",
        )
        assert worker.proc.poll() is None, worker.log()[-4000:]

    assert "Unrecoverable error" not in worker.log()
    Gpu.objects.update(name="renamed by the test")
    from gpus.tasks import detect_gpus_task

    detect_gpus_task.delay()
    wait_for(
        lambda: not Gpu.objects.filter(name="renamed by the test").exists(),
        timeout=30,
        what="the scan to complete",
    )
    config_save(assignments=[{"service": "ai-clip", "gpu_index": 1}])
    res = staff_client.post("/api/system/gpu-config/apply")
    assert res.status_code == 202, res.json()
    assert res.json()["restarted_services"] == ["ai-clip"]
    run = wait_for(
        lambda: ApplyRun.objects.filter(status="succeeded").first(),
        timeout=60,
        what="the apply to succeed",
    )
    assert run.services == ["ai-clip"]
    assert worker.proc.poll() is None
