"""How long planning takes, per strategy, on seeded random inventories.

Run ``python bench/planner.py`` from the project root. Prints the median time of one
``plan()`` call in milliseconds for 5 services × 2 GPUs, 16 × 4 and 64 × 8. Figures only; the
target is under 50 ms each at 64 × 8.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from assignments.planner import GpuView, ServiceDemand, plan, strategy_names

SIZES = ((5, 2), (16, 4), (64, 8))
INSTANCES = 5
REPEATS = 7
SEED = 20240601


def make_instance(rng: random.Random, services: int, gpus: int):
    """A random but plausible inventory: mixed GPU sizes, a few busy, mostly small models."""
    gpu_views = [
        GpuView(
            index=i,
            uuid=f"GPU-bench-{i}",
            name=f"NVIDIA Bench {i}",
            total_mb=rng.choice([4094, 8192, 12288, 16384, 24564, 49152]),
            foreign_used_mb=rng.choice([0, 0, 0, 256, 1024]),
            compute_capability=rng.choice([(7, 5), (8, 6), (8, 9), (9, 0)]),
        )
        for i in range(gpus)
    ]
    demands = []
    for i in range(services):
        adjustable = rng.random() < 0.15
        demands.append(
            ServiceDemand(
                name=f"svc-{i}",
                need_mb=int(min(24000, rng.lognormvariate(7.5, 0.9))),
                latency_critical=rng.random() < 0.25,
                isolated=i == 0 or rng.random() < 0.03,
                budget_adjustable=adjustable,
                default_budget_gb=round(rng.uniform(1.0, 8.0), 1) if adjustable else None,
                current_gpu=rng.choice([None, *range(gpus)]),
            )
        )
    return gpu_views, demands


def time_strategy(name: str, instances) -> float:
    """Median wall time of one plan() call, in milliseconds."""
    samples = []
    for gpus, services in instances:
        plan(name, gpus, services)  # warm-up
        for _ in range(REPEATS):
            start = time.perf_counter()
            plan(name, gpus, services)
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> dict[str, dict[tuple[int, int], float]]:
    """Run the benchmark, print the table, and return the medians (``argv`` takes no options)."""
    rng = random.Random(SEED)
    instances = {size: [make_instance(rng, *size) for _ in range(INSTANCES)] for size in SIZES}
    results = {
        name: {size: time_strategy(name, instances[size]) for size in SIZES}
        for name in strategy_names()
    }

    headers = ["strategy"] + [f"{s}×{g} (ms)" for s, g in SIZES]
    rows = [[name] + [f"{results[name][size]:.3f}" for size in SIZES] for name in results]
    widths = [max(len(row[c]) for row in [headers, *rows]) for c in range(len(headers))]
    print(
        f"Median plan() time over {INSTANCES} seeded instances × {REPEATS} runs (services × GPUs)"
    )
    print(
        "  ".join(
            h.ljust(w) if c == 0 else h.rjust(w) for c, (h, w) in enumerate(zip(headers, widths))
        )
    )
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(
            "  ".join(
                v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in enumerate(zip(row, widths))
            )
        )
    return results


if __name__ == "__main__":
    main()
