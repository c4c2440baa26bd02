"""`make bench`: every benchmark of the project, one after the other, figures printed."""

from __future__ import annotations

import importlib
import sys
import time

SECTIONS = [
    ("Planner", "bench.planner"),
    ("Planner with rules (64 services × 8 GPUs)", "bench.rules"),
    ("GPU detection (NVML stand-in)", "bench.detection"),
    ("Measured VRAM: attributing 8 GPUs x 64 processes", "bench.attribution"),
    ("API latency", "bench.api"),
    ("Fleet page render (50 hosts × 4 GPUs)", "bench.fleet_page"),
    ("Apply / restart (real Docker engine and Podman service)", "bench.apply"),
    ("Downtime per move, by mode (real Docker engine)", "bench.moves"),
    ("Fleet: scan reports taken in by the central worker (PostgreSQL, RabbitMQ)", "bench.fleet"),
]


def machine_speed() -> float:
    """Seconds this Python takes for ten million additions in a loop (best of three): how fast
    this box runs Python today, so figures from two machines (or two days of a shared one) can
    be read side by side. About 0.5 s on a quick desktop."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        total = 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    only = set(sys.argv[1:])
    failed = []
    print(f"machine: 10M-addition Python loop in {machine_speed():.2f} s (best of 3)", flush=True)
    for title, module in SECTIONS:
        if only and module.rsplit(".", 1)[-1] not in only:
            continue
        print(f"\n=== {title} ===", flush=True)
        start = time.perf_counter()
        try:
            importlib.import_module(module).main([])
        except SystemExit as exc:
            if exc.code not in (None, 0):
                print(f"  {module} stopped: {exc.code}")
                failed.append(module)
        print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
