"""The same input gives the same plan in another process, whatever its string hash seed.

Within one process hypothesis checks determinism (test_planner_properties); set and dict order
of strings changes only between processes (PYTHONHASHSEED), so that is checked here by running
the planner in two child processes with different seeds and comparing what they print.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Seeded inventories and catalogs, built the same way in each child: 40 cases, every strategy.
CHILD = r"""
import random
from assignments.planner import GpuView, ServiceDemand, plan, strategy_names

rng = random.Random(20261204)
out = []
for case in range(40):
    gpus = [
        GpuView(index=i, uuid=f"GPU-{case}-{i}", name=f"NVIDIA Test {i}",
                total_mb=rng.choice([4094, 8192, 12288, 24564, 49152]),
                foreign_used_mb=rng.choice([0, 0, 256, 1024]),
                compute_capability=rng.choice([(7, 5), (8, 6), (8, 9)]),
                available=rng.random() > 0.1)
        for i in range(rng.randint(1, 4))
    ]
    services = []
    for s in range(rng.randint(1, 9)):
        adjustable = rng.random() < 0.4
        services.append(ServiceDemand(
            name=rng.choice("abcdefgh") + f"-svc-{s}", need_mb=rng.randint(200, 22000),
            latency_critical=rng.random() < 0.3, isolated=rng.random() < 0.15,
            budget_adjustable=adjustable,
            default_budget_gb=round(rng.uniform(1, 8), 1) if adjustable else None,
            min_budget_gb=None, current_gpu=rng.choice([None, 0, 1]),
            budget_gb=None))
    for name in strategy_names():
        out.append(repr(plan(name, gpus, services)))
print("\n".join(out))
"""


def plans_with_hash_seed(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_plans_do_not_depend_on_the_string_hash_seed():
    first = plans_with_hash_seed("1")
    assert first.count("Plan(") == 40 * 5  # every case, every strategy
    assert plans_with_hash_seed("2") == first
    assert plans_with_hash_seed("31337") == first
