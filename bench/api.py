"""Latency of GET /api/system/gpus under 50 concurrent clients.

Serves the project with a fresh SQLite database and the simulated reference inventory (one
scan at start), then 50 client threads each make requests with the API key. The request path
reads the database only; NVML is never called on it.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.detection import percentile

KEY = "bench-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gpuconfig-bench-api-") as tmp:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=f"sqlite:///{tmp}/bench.sqlite3",
            GPUCONFIG_VAR_DIR=tmp,
            GPUCONFIG_CONFIG_DIR=f"{tmp}/config",
            GPUCONFIG_SIMULATED_GPUS=str(REPO_ROOT / "config/examples/gpus.reference.yml"),
            GPUCONFIG_API_KEY=KEY,
            GPUCONFIG_CACHE_PREFIX=f"bench-{os.getpid()}",
            GPUCONFIG_LOG_LEVEL="WARNING",
        )
        manage = [sys.executable, "manage.py"]
        subprocess.run(
            [*manage, "migrate", "--noinput"],
            cwd=REPO_ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*manage, "detect_gpus"], cwd=REPO_ROOT, env=env, check=True, capture_output=True
        )
        port = _free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "gpuconfig_site.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "8",
                "--backlog",
                "256",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/api/system/gpus"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(
                        urllib.request.Request(url, headers={"X-API-Key": KEY}), timeout=2
                    )
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit("the server did not start")
                    time.sleep(0.2)

            latencies: list[float] = []
            errors = 0
            lock = threading.Lock()
            barrier = threading.Barrier(args.clients)

            def client() -> None:
                nonlocal errors
                mine = []
                barrier.wait()
                for _ in range(args.requests):
                    start = time.perf_counter()
                    try:
                        req = urllib.request.Request(url, headers={"X-API-Key": KEY})
                        with urllib.request.urlopen(req, timeout=30) as res:
                            res.read()
                        mine.append((time.perf_counter() - start) * 1000)
                    except OSError:
                        with lock:
                            errors += 1
                with lock:
                    latencies.extend(mine)

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            wall = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - wall
        finally:
            server.terminate()
            server.wait(10)

    print(
        f"GET /api/system/gpus, {args.clients} concurrent clients x {args.requests} requests "
        "(gunicorn 2 workers x 8 threads, SQLite)"
    )
    print(f"  requests ok : {len(latencies)}  errors: {errors}")
    print(f"  p50         : {statistics.median(latencies):.1f} ms")
    print(f"  p99         : {percentile(latencies, 0.99):.1f} ms")
    print(f"  throughput  : {len(latencies) / wall:.0f} req/s")


if __name__ == "__main__":
    main()
