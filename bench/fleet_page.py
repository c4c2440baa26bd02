"""The fleet overview (``/settings/fleet/``) rendered for 50 hosts × 4 GPUs.

Run ``python -m bench fleet_page`` from the project root (Redis at ``REDIS_URL``). A fresh
SQLite database under a temporary folder gets 50 registered hosts, each with its first scan of
four GPUs taken in as its agent's would be (``scan_report_ingest`` under ``host_scope``: the
host's inventory and its initial configuration); a few hosts are offline, one was never seen,
and some carry foreign VRAM use that over-commits a GPU. The page is rendered through Django's
test client, logged in, ``--renders`` times after one warm-up render, and the figures printed:
p50 and p95 in milliseconds, and the database queries of a render (warm, and cold: every
host's configuration state moved first, as a save on every host would, so each host's problems
are planned again; the shared Redis is never flushed). For scale, one host's own GPU
Configuration page is timed the same way: the overview does not run it per host.

Goal: p50 <= 50 ms. Figures only.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOSTS = 50
GPUS_PER_HOST = 4
GOAL_P50_MS = 50.0
SEED = 20261204
CARDS = (("NVIDIA L4", 23034), ("NVIDIA RTX A5500", 24564), ("NVIDIA A100 80GB PCIe", 81920))


def _setup(tmp: str) -> None:
    os.environ.update(
        DATABASE_URL=f"sqlite:///{tmp}/bench.sqlite3",
        GPUCONFIG_VAR_DIR=tmp,
        GPUCONFIG_CONFIG_DIR=f"{tmp}/config",
        GPUCONFIG_CACHE_PREFIX=f"bench-fleet-{os.getpid()}",
        GPUCONFIG_LOG_LEVEL="ERROR",
        GPUCONFIG_HOST_NAME="gpu-01",
        GPUCONFIG_ENV_FILE="/dev/null",
        DJANGO_SETTINGS_MODULE="gpuconfig_site.settings",
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()
    call_command("migrate", "--noinput", verbosity=0)


def _fleet(rng: random.Random) -> None:
    from django.utils import timezone

    from fleet.models import Host
    from fleet.services import host_register
    from gpuconfig_site.hosts import host_scope
    from gpus.backends.base import GpuReading
    from gpus.services import scan_report_ingest

    now = timezone.now()
    for n in range(1, HOSTS + 1):
        name = f"gpu-{n:02d}"
        host = Host.objects.filter(name=name).first() or host_register(
            name=name, display_name=f"Rack {1 + (n - 1) // 10} box {n}"
        )
        # Most online; four offline for an hour; the last one never seen.
        seen = None if n == HOSTS else now - timedelta(hours=1 if n % 12 == 0 else 0, seconds=2)
        Host.objects.filter(pk=host.pk).update(last_heartbeat=seen)
        card, total = CARDS[n % len(CARDS)]
        readings = [
            GpuReading(
                index=i,
                uuid=f"GPU-{name}-{i}",
                name=card,
                vram_total_mb=total,
                # One host in five has a process gpuconfig does not manage filling a card.
                vram_used_mb=total - 200 if (n % 5 == 0 and i == 0) else rng.randint(300, 4000),
                utilization_percent=rng.randint(0, 100),
                temperature_c=rng.randint(30, 80),
            )
            for i in range(GPUS_PER_HOST)
        ]
        with host_scope(name):
            summary = scan_report_ingest(readings=readings, backend="nvml")
        if summary.get("error"):
            raise SystemExit(f"scan of {name} refused: {summary['error']}")


def _timed(client, path: str, renders: int) -> list[float]:
    times = []
    for _ in range(renders):
        start = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path} answered {response.status_code}")
    return times


def _queries(client, path: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        client.get(path)
    return len(captured)


def _all_stale() -> None:
    """Every host's cached reads out of date, as after a save on each."""
    from assignments.selectors import config_state_bump
    from gpuconfig_site.hosts import host_scope

    for n in range(1, HOSTS + 1):
        with host_scope(f"gpu-{n:02d}"):
            config_state_bump()


def _p(times: list[float], q: float) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[q - 1]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=200)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gpuconfig-bench-fleet-") as tmp:
        _setup(tmp)
        from django.contrib.auth import get_user_model
        from django.test import Client

        start = time.perf_counter()
        _fleet(random.Random(SEED))
        print(
            f"  {HOSTS} hosts × {GPUS_PER_HOST} GPUs registered and scanned "
            f"in {time.perf_counter() - start:.1f} s"
        )
        user = get_user_model().objects.create_user("bench", password="x", is_staff=True)
        client = Client()
        client.force_login(user)
        fleet, host_page = "/settings/fleet/", "/settings/gpu/?host=gpu-07"

        _all_stale()
        cold_queries = _queries(client, fleet)
        _all_stale()
        cold_ms = _timed(client, fleet, 1)[0]
        warm_queries = _queries(client, fleet)
        times = _timed(client, fleet, args.renders)
        p50, p95 = _p(times, 50), _p(times, 95)
        _timed(client, host_page, 3)
        page_times = _timed(client, host_page, max(args.renders // 4, 20))
        page_p50 = _p(page_times, 50)

        verdict = "meets" if p50 <= GOAL_P50_MS else "misses"
        print(
            f"  fleet page, {args.renders} renders:   p50 {p50:6.1f} ms   p95 {p95:6.1f} ms"
            f"   (goal p50 <= {GOAL_P50_MS:.0f} ms: {verdict})"
        )
        print(
            f"  queries per render: {warm_queries} warm, "
            f"{cold_queries} cold (every host's state moved)"
        )
        print(f"  first render after every host's state moved: {cold_ms:.1f} ms")
        print(
            f"  one host's GPU page for scale: p50 {page_p50:.1f} ms "
            f"(× {HOSTS} hosts = {page_p50 * HOSTS / 1000:.2f} s if run per host)"
        )
        return {"p50_ms": p50, "p95_ms": p95, "queries": warm_queries}


if __name__ == "__main__":
    main(sys.argv[1:])
