"""``gpuconfig agent``: this GPU host's agent, a Celery worker on its own host's queue only.

It needs ``GPUCONFIG_HOST_NAME`` and the broker (``GPUCONFIG_BROKER_URL``, default
``REDIS_URL``), and no database: it reports through the broker's central exchange. The process
is replaced by the worker (``exec``), so a supervisor's signals reach Celery itself.
"""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from fleet.routing import host_queue_name


class Command(BaseCommand):
    help = "Run this GPU host's agent (a Celery worker reading only its host's queue)."
    # No system checks: an agent has no database to check against.
    requires_system_checks: list = []

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, default=1)
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, concurrency: int, loglevel: str, **options):
        host = settings.GPUCONFIG_HOST_NAME
        env = dict(os.environ, GPUCONFIG_ROLE="agent", GPUCONFIG_HOST_NAME=host)
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "gpuconfig_site",
            "worker",
            "--queues",
            host_queue_name(host),
            "--hostname",
            f"agent-{host}@%h",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            loglevel,
            # Gossip, mingle and the event heartbeat use broker exchanges of their own, which an
            # agent's broker user may not touch; the host's liveness is its own heartbeat task.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        sys.stdout.flush()
        os.execve(sys.executable, argv, env)
