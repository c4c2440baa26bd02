"""Scan reports taken in per second by the central worker, on PostgreSQL, end to end.

    python -m bench.fleet [--hosts 200] [--gpus 4] [--rounds 3] [--concurrency 2]

One process plays a fleet: it registers ``--hosts`` hosts and publishes one scan report per host
and round (``--gpus`` GPUs each, two processes per GPU) through ``fleet.scans.scan_report_send``
to the central exchange of a private RabbitMQ vhost (RabbitMQ: the centre takes a report for a
host only from a broker that says who sent it). A real central Celery worker (``gpuconfig
worker``'s command line, ``--concurrency``) takes them in through the real task path: the
sender check, ``scan_report_ingest``, the inventory sync, the host's last scan. The time runs
from the first publish to the last report's ingest (the newest ``finished_at`` of the hosts'
last scans). The first round (every GPU new, each host's first plan) is reported apart from
the rounds after it (the steady state, what a fleet does every scan interval).

The database is a fresh PostgreSQL one (``GPUCONFIG_BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/gpuconfig_bench_fleet``), created and dropped here; the
vhost too. Goal: >= 100 host scans/s in the steady state.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL = 100.0  # host scans per second
RABBITMQ = "127.0.0.1:5672"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/gpuconfig_bench_fleet"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, check=True, timeout=60)


def database_admin(url: str, statement: str) -> None:
    """Run ``statement`` on the server of ``url``, connected to its ``postgres`` database."""
    import psycopg

    server = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(statement)


# --- The fleet's side (a child process with the bench's database, broker and cache) --------------


def fleet_reports(hosts: list[str], gpus: int, round_no: int):
    from fleet.scans import ScanReport
    from gpus.attribution import ProcessUse
    from gpus.backends.base import GpuReading

    now = datetime.now(UTC)
    for h, host in enumerate(hosts):
        readings = tuple(
            GpuReading(
                index=i,
                uuid=f"GPU-{h:04d}-{i:02d}-bench",
                name="NVIDIA L4",
                vram_total_mb=23034,
                vram_used_mb=1000 + (round_no * 37 + i) % 4000,
                compute_capability=(8, 9),
                utilization_percent=(round_no * 13 + i) % 100,
                temperature_c=40 + i,
                power_w=30.5,
                pci_bus_id=f"00000000:{i + 1:02x}:00.0",
                processes=((10_000 + i, 400), (20_000 + i, 300)),
            )
            for i in range(gpus)
        )
        processes = {
            r.uuid: tuple(
                ProcessUse(gpu_uuid=r.uuid, pid=pid, used_mb=used, name="python3")
                for pid, used in r.processes
            )
            for r in readings
        }
        yield ScanReport(host, "nvml", readings, (), None, processes, now)


def last_scans(hosts: list[str]) -> dict[str, dict]:
    from django.core.cache import cache

    from gpuconfig_site.hosts import host_key, host_scope
    from gpus.selectors import LAST_SCAN_KEY

    keys = {}
    for host in hosts:
        with host_scope(host):
            keys[host_key(LAST_SCAN_KEY)] = host
    found = cache.get_many(list(keys))
    return {keys[key]: summary for key, summary in found.items()}


def measure(app, hosts: list[str], gpus: int, rounds: range, timeout: float) -> dict:
    """Publish a report per host and round; wait for the last one's ingest."""
    from fleet.scans import scan_report_send

    target = rounds[-1]
    started = time.perf_counter()
    started_wall = datetime.now(UTC)
    for round_no in rounds:
        for report in fleet_reports(hosts, gpus, round_no):
            scan_report_send(app, report)
    published = time.perf_counter() - started
    deadline = time.monotonic() + timeout
    while True:
        scans = last_scans(hosts)
        done = [s for s in scans.values() if s.get("seq", 0) >= target]
        if len(done) == len(hosts):
            break
        if time.monotonic() > deadline:
            sys.exit(f"only {len(done)} of {len(hosts)} hosts' reports taken in after {timeout}s")
        # The end is the newest finished_at, not when this loop sees it: polling slowly only
        # keeps this process off the worker's CPUs.
        time.sleep(0.5)
    errors = [s["error"] for s in scans.values() if s.get("error")]
    if errors:
        sys.exit(f"reports taken in with errors: {errors[:3]}")
    last = max(datetime.fromisoformat(s["finished_at"]) for s in scans.values())
    elapsed = (last - started_wall).total_seconds()
    reports = len(hosts) * len(rounds)
    return {"reports": reports, "published_s": published, "elapsed_s": elapsed}


def ingest_alone(hosts: list[str], gpus: int, round_no: int) -> float:
    """Seconds one report takes through the central side's function itself, in this process
    (the sender check, the sync, the last scan): the worker's cost without the queue."""
    from fleet.scans import scan_report_receive

    payloads = [report.as_payload() for report in fleet_reports(hosts, gpus, round_no)]
    started = time.perf_counter()
    for payload in payloads:
        if scan_report_receive(payload, sender="guest") is None:
            sys.exit("a report was refused")
    return (time.perf_counter() - started) / len(payloads)


def task_times(log: Path) -> list[float]:
    """Seconds each ``fleet.scan_report`` task took, in the order the worker logged them."""
    pattern = re.compile(r"Task fleet\.scan_report\[[^\]]+\] succeeded in ([0-9.]+)s")
    return [float(m[1]) for m in pattern.finditer(log.read_text(errors="replace"))]


def worker_start(log: Path, concurrency: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "gpuconfig_site",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "-n",
        f"bench-central-{secrets.token_hex(3)}@%h",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while " ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the central worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc


def worker_stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def keys_drop(settings) -> None:
    """Remove the bench's cache keys (its own prefix) from the shared Redis."""
    import redis

    prefix = settings.CACHES["default"].get("KEY_PREFIX", "")
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        client.delete(key)


def child(args) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from kombu import Connection

    from fleet.models import Host
    from fleet.routing import topology_declare
    from gpuconfig_site.celery import app

    call_command("migrate", verbosity=0)
    hosts = [f"bench-{n:04d}" for n in range(args.hosts)]
    # The fleet's publisher connects as the vhost's one user: every bench host is registered
    # with it, so the centre's sender check runs in full and passes.
    Host.objects.bulk_create(Host(name=name, broker_user="guest") for name in hosts)
    with Connection(settings.CELERY_BROKER_URL) as connection:
        topology_declare(connection, [])

    proc = worker_start(Path(args.log), args.concurrency)
    try:
        first = measure(app, hosts, args.gpus, range(1, 2), args.timeout)
        steady = measure(app, hosts, args.gpus, range(2, args.rounds + 1), args.timeout)
    finally:
        worker_stop(proc)
    direct = ingest_alone(hosts, args.gpus, args.rounds + 1)
    from gpus.models import Gpu

    keys_drop(settings)
    stored = Gpu.all_hosts.count()
    if stored != args.hosts * args.gpus:
        sys.exit(f"{stored} GPUs stored, expected {args.hosts * args.gpus}")
    print(
        f"{args.hosts} hosts x {args.gpus} GPUs, central worker --concurrency {args.concurrency}, "
        f"PostgreSQL, RabbitMQ"
    )
    for title, figures in (("first scans (GPUs new)", first), ("steady state", steady)):
        rate = figures["reports"] / figures["elapsed_s"]
        print(
            f"  {title:<24}: {figures['reports']:>5} reports in {figures['elapsed_s']:.2f} s "
            f"= {rate:7.1f} host scans/s (published in {figures['published_s']:.2f} s)"
        )
    times = task_times(Path(args.log))[-steady["reports"] :]
    if times:
        print(
            f"  in the worker, per steady report: median {statistics.median(times) * 1000:.1f} ms, "
            f"p90 {sorted(times)[int(len(times) * 0.9)] * 1000:.1f} ms (the task's own time)"
        )
    print(
        f"  ingest alone (scan_report_receive in one process, no broker): {direct * 1000:.1f} ms "
        f"per report = {1 / direct:.1f} host scans/s per process"
    )
    rate = steady["reports"] / steady["elapsed_s"]
    verdict = "met" if rate >= GOAL else "MISSED"
    print(f"  goal: >= {GOAL:.0f} host scans/s in the steady state: {verdict} ({rate:.1f})")


# --- The bench: a database and a vhost of its own, the fleet in a child --------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of reports (>= 2)")
    parser.add_argument("--concurrency", type=int, default=2, help="central worker processes")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the first round is reported apart)")
    if args.child:
        child(args)
        return

    database_url = os.environ.get("GPUCONFIG_BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
    database = database_url.rsplit("/", 1)[1]
    vhost = f"gpuconfig-bench-{secrets.token_hex(4)}"
    try:
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"RabbitMQ on {RABBITMQ} is needed (rabbitmqctl): {exc}")
    try:
        database_admin(database_url, f'DROP DATABASE IF EXISTS "{database}"')
        database_admin(database_url, f'CREATE DATABASE "{database}"')
    except Exception as exc:  # noqa: BLE001 - any reason the server refuses, said plainly
        rabbitmqctl("delete_vhost", vhost)
        sys.exit(f"PostgreSQL is needed ({database_url}): {exc}")
    try:
        with tempfile.TemporaryDirectory(prefix="gpuconfig-bench-fleet-") as tmp:
            env = dict(os.environ)
            for name in ("GPUCONFIG_SIMULATED_GPUS", "GPUCONFIG_HOST_NAME", "GPUCONFIG_ROLE"):
                env.pop(name, None)
            env.update(
                DJANGO_SETTINGS_MODULE="gpuconfig_site.settings",
                DATABASE_URL=database_url,
                GPUCONFIG_BROKER_URL=f"amqp://guest:guest@{RABBITMQ}/{vhost}",
                GPUCONFIG_CACHE_PREFIX=f"bench-fleet-{secrets.token_hex(4)}",
                GPUCONFIG_CONFIG_DIR=str(Path(tmp) / "config"),
                GPUCONFIG_ENV_FILE="/dev/null",
                GPUCONFIG_GPU_BACKEND="simulated",
                # Reports expire after two scan intervals: none may expire while queued here.
                GPUCONFIG_SCAN_INTERVAL="3600",
                PYTHONPATH=str(ROOT),
            )
            command = [sys.executable, "-m", "bench.fleet", "--child", "--log", f"{tmp}/w.log"]
            command += [f"--{k}={getattr(args, k)}" for k in ("hosts", "gpus", "rounds")]
            command += [f"--concurrency={args.concurrency}", f"--timeout={args.timeout}"]
            result = subprocess.run(command, cwd=ROOT, env=env, check=False)
            if result.returncode != 0:
                log = Path(tmp) / "w.log"
                if log.exists():
                    print(log.read_text(errors="replace")[-3000:])
                sys.exit(f"the fleet bench failed ({result.returncode})")
    finally:
        rabbitmqctl("delete_vhost", vhost)
        database_admin(database_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
