"""The API and the settings page under load, measured with wrk beside ``/healthz``.

Serves the project through gunicorn (as many workers and threads as `gpuconfig serve` runs)
with a fresh SQLite database and the simulated reference inventory (one scan at start). The
load comes from wrk (Debian's ``wrk``, written in C), not from Python threads competing with
the server for the same cores. Each gunicorn worker takes its share of the connections:
uncapped, one worker may accept all of them when wrk opens them at once while the other idles,
halving a window at random.

``/healthz`` (the cheapest answer the stack can give: no database, no cache) is the floor.
The run goes in rounds (3 by default): each round drives the floor, then every endpoint, for
a few seconds each at 50 connections, and the floor once more at the end. An endpoint's
ratio in a round is its rate over the mean of the floors measured just before and just after
that round, so a drift of the box during the run (another process, a CPU slowed down) weighs
on both sides alike; the figures reported are the medians over the rounds. The request paths
read the database and the cache only; neither NVML nor the container engine is called on
them.

Goals: ``/api/system/gpus`` >= 0.6 of the floor, ``/api/system/gpu-config`` >= 0.3,
``/api/system/gpu-config/status`` and ``/api/system/gpu-config/services`` >= 500 req/s, the
settings page >= 200 req/s, all at 50 connections.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

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


def wrk(
    port: int, path: str, headers: dict[str, str], *, connections: int, seconds: float
) -> dict[str, float]:
    """One wrk run: requests per second, p50 and p99 latency (ms), and the failures (non-2xx
    answers and socket errors)."""
    binary = shutil.which("wrk")
    if binary is None:
        sys.exit("wrk is needed for the API bench (Debian: apt-get install wrk)")
    command = [
        binary,
        "--threads",
        str(min(2, connections)),
        "--connections",
        str(connections),
        "--duration",
        f"{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
    ]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(out: str) -> dict[str, float]:
    """The figures of wrk's ``--latency`` report."""

    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return float(match[1]) * _UNITS_MS[match[2]] if match else float("nan")

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:(.*)$", out, re.M)
    errors = int(non_2xx[1]) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors[1]))
    done = re.search(r"^\s*(\d+) requests in", out, re.M)
    return {
        "requests": int(done[1]) if done else 0,
        "errors": errors,
        "p50": latency("50"),
        "p99": latency("99"),
        "rps": float(rps[1]) if rps else 0.0,
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


# (title, path, header kind, goal: ("ratio", x) of the floor or ("rps", n))
ENDPOINTS = [
    ("GET /api/system/gpus", "/api/system/gpus", "key", ("ratio", 0.6)),
    ("GET /api/system/gpu-config", "/api/system/gpu-config", "key", ("ratio", 0.3)),
    ("GET /api/system/gpu-config/status", "/api/system/gpu-config/status", "key", ("rps", 500)),
    (
        "GET /api/system/gpu-config/services",
        "/api/system/gpu-config/services",
        "key",
        ("rps", 500),
    ),
    ("GET /settings/gpu/ (page)", "/settings/gpu/", "session", ("rps", 200)),
]
FLOOR = ("GET /healthz (floor)", "/healthz")


def _verdict(goal, figures: dict[str, float]) -> str:
    if goal is None:
        return ""
    kind, value = goal
    if kind == "ratio":
        return f"goal >= {value:g}: {'met' if figures['ratio'] >= value else 'MISSED'}"
    return f"goal >= {value:g} req/s: {'met' if figures['rps'] >= value else 'MISSED'}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every endpoint")
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
        headers = {"key": {"X-API-Key": KEY}, "session": {"Cookie": f"sessionid={session}"}}
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
                # Each worker takes its share of wrk's connections and no more: wrk opens them
                # all at once, and uncapped one worker could accept every one of them while the
                # other idles, halving a window at random.
                "--worker-connections",
                str(-(-args.connections // WORKERS)),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        n, seconds = args.connections, args.seconds
        floors: list[dict[str, float]] = []
        rounds: list[list[dict[str, float]]] = []
        try:
            _wait_up(port, FLOOR[1], {})
            for _, path, kind, _goal in ENDPOINTS:
                _wait_up(port, path, headers[kind])
                wrk(port, path, headers[kind], connections=4, seconds=1)  # warm both workers
            for _ in range(args.rounds):
                floors.append(wrk(port, FLOOR[1], {}, connections=n, seconds=seconds))
                rounds.append(
                    [
                        wrk(port, path, headers[kind], connections=n, seconds=seconds)
                        for _, path, kind, _goal in ENDPOINTS
                    ]
                )
            floors.append(wrk(port, FLOOR[1], {}, connections=n, seconds=seconds))
        finally:
            server.terminate()
            server.wait(10)

    print(
        f"wrk, {n} connections, {args.rounds} rounds of {seconds:g} s per request; gunicorn "
        f"{WORKERS} workers x {THREADS} threads, SQLite; {os.cpu_count()} CPUs shared by "
        "server and wrk"
    )
    print("floor: GET /healthz " + ", ".join(f"{f['rps']:.0f}" for f in floors) + " req/s")
    report(floors, rounds)


def summarize(
    floors: list[dict[str, float]], rounds: list[list[dict[str, float]]]
) -> list[dict[str, float]]:
    """Per endpoint, over the rounds: total requests and errors, the medians of p50, p99 and
    req/s, and the median of its ratio to the floor around its round (``floors[r]`` was
    measured before round ``r``, ``floors[r + 1]`` after it)."""
    out = []
    for i in range(len(rounds[0])):
        runs = [round_[i] for round_ in rounds]
        ratios = [
            run["rps"] / ((floors[r]["rps"] + floors[r + 1]["rps"]) / 2)
            for r, run in enumerate(runs)
        ]
        out.append(
            {
                **_combined(runs),
                "ratio": statistics.median(ratios),
                "ratio_low": min(ratios),
                "ratio_high": max(ratios),
            }
        )
    return out


def _combined(runs: list[dict[str, float]]) -> dict[str, float]:
    """Several wrk runs of one request: total requests and errors, median latencies and rate."""
    return {
        "requests": sum(run["requests"] for run in runs),
        "errors": sum(run["errors"] for run in runs),
        "p50": statistics.median(run["p50"] for run in runs),
        "p99": statistics.median(run["p99"] for run in runs),
        "rps": statistics.median(run["rps"] for run in runs),
    }


def report(floors: list[dict[str, float]], rounds: list[list[dict[str, float]]]) -> list[str]:
    """Prints the table; returns the titles of the endpoints that missed their goal."""
    columns = ("requests", "errors", "p50 ms", "p99 ms", "req/s", "x floor")
    widths = (8, 6, 8, 8, 7, 7)
    print(
        f"  {'request (medians over rounds)':<36} "
        + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths))
        + "  (range)"
    )
    floor = {**_combined(floors), "ratio": 1.0}
    missed = []
    rows = [(FLOOR[0], None, floor)] + [
        (title, goal, figures)
        for (title, _path, _kind, goal), figures in zip(ENDPOINTS, summarize(floors, rounds))
    ]
    for title, goal, f in rows:
        verdict = _verdict(goal, f)
        spread = f"({f['ratio_low']:.2f}-{f['ratio_high']:.2f})" if "ratio_low" in f else ""
        print(
            f"  {title:<36} {f['requests']:>8} {f['errors']:>6} {f['p50']:>8.1f} "
            f"{f['p99']:>8.1f} {f['rps']:>7.0f} {f['ratio']:>7.2f}  {spread:<11} "
            f"{verdict}".rstrip()
        )
        if "MISSED" in verdict:
            missed.append(title)
    if missed:
        print(f"  missed: {', '.join(missed)}")
    return missed


if __name__ == "__main__":
    main()
