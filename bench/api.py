"""The API and the settings page under load: 1 and 50 concurrent clients through gunicorn
(as many workers and threads as `gpuconfig serve` runs).

Serves the project with a fresh SQLite database and the simulated reference inventory (one
scan at start) and measures ``GET /api/system/gpus``, ``/gpu-config/status`` and
``/gpu-config/services`` (API key) and ``GET /settings/gpu/`` (a logged-in staff session) with
1 client, then with 50 at once: p50, p99 and requests per second.
Each client keeps its connection open, as a browser does. The request paths read the database
and the cache only; neither NVML nor the container engine is called on them.

The clients run on the same machine as the server, so on a small box they take part of its CPU:
read the figures as a floor, and expect noise when other work shares the machine.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.detection import percentile
from gpuconfig_site.cli import SERVE_THREADS as THREADS
from gpuconfig_site.cli import SERVE_WORKERS as WORKERS

KEY = "bench-key"
SESSION_SCRIPT = """
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
user = get_user_model().objects.create_user("bench", password="bench-pw-123", is_staff=True)
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(session.session_key)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(
    port: int, path: str, headers: dict[str, str], *, clients: int, requests: int
) -> dict[str, float]:
    """``clients`` threads, each making ``requests`` requests on one kept-alive connection."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        nonlocal errors
        mine: list[float] = []
        failed = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        barrier.wait()
        for _ in range(requests):
            start = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                res = conn.getresponse()
                res.read()
                if res.status != 200:
                    failed += 1
                    continue
                mine.append((time.perf_counter() - start) * 1000)
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    wall = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    return {
        "ok": len(latencies),
        "errors": errors,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": percentile(latencies, 0.99) if latencies else float("nan"),
        "rps": len(latencies) / wall,
    }


def _wait_up(port: int, path: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path, headers=headers)
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
            sys.exit(f"GET {path} answered {status}")
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("the server did not start")
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="requests per client")
    parser.add_argument("--single", type=int, default=300, help="requests of the lone client")
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
        for command in (["migrate", "--noinput"], ["detect_gpus"]):
            subprocess.run(
                [*manage, *command], cwd=REPO_ROOT, env=env, check=True, capture_output=True
            )
        session = subprocess.run(
            [*manage, "shell", "-c", SESSION_SCRIPT],
            cwd=REPO_ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
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
                str(WORKERS),
                "--threads",
                str(THREADS),
                "--backlog",
                "256",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        targets = [
            ("GET /api/system/gpus", "/api/system/gpus", {"X-API-Key": KEY}),
            ("GET .../status", "/api/system/gpu-config/status", {"X-API-Key": KEY}),
            ("GET .../services", "/api/system/gpu-config/services", {"X-API-Key": KEY}),
            ("GET /settings/gpu/", "/settings/gpu/", {"Cookie": f"sessionid={session}"}),
        ]
        results = []
        try:
            for _, path, headers in targets:
                _wait_up(port, path, headers)
                _load(port, path, headers, clients=4, requests=10)  # warm both workers
            for title, path, headers in targets:
                for clients, requests in ((1, args.single), (args.clients, args.requests)):
                    figures = _load(port, path, headers, clients=clients, requests=requests)
                    results.append((title, clients, figures))
        finally:
            server.terminate()
            server.wait(10)

    print(
        f"gunicorn {WORKERS} workers x {THREADS} threads, SQLite, clients kept alive, "
        f"{os.cpu_count()} CPUs shared by server and clients"
    )
    columns = ("clients", "ok", "errors", "p50 ms", "p99 ms", "req/s")
    widths = (7, 6, 6, 8, 8, 7)
    print(f"  {'request':<22} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths)))
    for title, clients, f in results:
        print(
            f"  {title:<22} {clients:>7} {f['ok']:>6} {f['errors']:>6} "
            f"{f['p50']:>8.1f} {f['p99']:>8.1f} {f['rps']:>7.0f}"
        )


if __name__ == "__main__":
    main()
