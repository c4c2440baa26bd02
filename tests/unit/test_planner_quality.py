"""How good the balanced plan is above the size it solves exactly.

Up to 12 services the balanced strategy proves its optimum; above that it improves a greedy
start by a bounded local search. These instances (13–14 services on 2–3 GPUs, seeded) are
compared with an exhaustive search over every assignment.

Tolerance: the total overflow must equal the optimum's, and the standard deviation of the GPUs'
utilisation may exceed the optimum's by at most 1.5 percentage points. The greedy start alone
misses that on 10 of these 24 instances.
"""

from __future__ import annotations

import functools
import math
import random
from fractions import Fraction

import pytest

from assignments.planner import GpuView, ServiceDemand, plan
from assignments.planner.strategies import balanced as balanced_module

INSTANCES = 24
SEED = 1309
SPREAD_TOLERANCE_POINTS = 1.5


def instance(rng: random.Random) -> tuple[list[GpuView], list[ServiceDemand]]:
    """2–3 GPUs and 13–14 services that fill them to 60–115 %, needs in steps of 256 MB."""
    gpus = [
        GpuView(i, f"GPU-{i}", f"NVIDIA Test {i}", rng.choice([8192, 12288, 16384, 24576]))
        for i in range(rng.choice([2, 3]))
    ]
    gpus = [
        GpuView(g.index, g.uuid, g.name, g.total_mb, rng.choice([0, 0, 256, 1024])) for g in gpus
    ]
    room = sum(g.total_mb - g.foreign_used_mb for g in gpus)
    fill = rng.uniform(0.6, 1.15)
    shares = [rng.lognormvariate(0, 0.8) for _ in range(rng.choice([13, 14]))]
    services = [
        ServiceDemand(f"svc-{i}", max(256, round(share / sum(shares) * room * fill / 256) * 256))
        for i, share in enumerate(shares)
    ]
    return gpus, services


def objective(gpus, loads) -> tuple[int, Fraction]:
    """(total overflow in MB, exact variance of the utilisation fractions)."""
    overflow = sum(max(0, load - g.total_mb) for load, g in zip(loads, gpus))
    fractions = [Fraction(load, g.total_mb) for load, g in zip(loads, gpus)]
    mean = sum(fractions) / len(fractions)
    return overflow, sum((f - mean) ** 2 for f in fractions) / len(fractions)


@functools.cache
def exhaustive_optimum(case: int) -> tuple[int, Fraction]:
    """The best objective over all ``len(gpus) ** len(services)`` assignments of a case.

    The objective depends only on each GPU's final load, so every assignment is enumerated by
    the set of load vectors it can reach, one service at a time. Cached: it does not depend on
    the planner.
    """
    gpus, services = CASES[case]
    reachable = {tuple(g.foreign_used_mb for g in gpus)}
    for service in services:
        reachable = {
            loads[:k] + (loads[k] + service.effective_mb,) + loads[k + 1 :]
            for loads in reachable
            for k in range(len(gpus))
        }
    return min(objective(gpus, loads) for loads in reachable)


def planned(gpus, services) -> tuple[int, Fraction]:
    result = plan("balanced", gpus, services)
    position = {g.index: k for k, g in enumerate(gpus)}
    loads = [g.foreign_used_mb for g in gpus]
    for service, placement in zip(services, result.placements):
        loads[position[placement.gpu_index]] += service.effective_mb
    return objective(gpus, loads)


def points(variance: Fraction) -> float:
    """A variance of fractions as a standard deviation in percentage points."""
    return math.sqrt(variance) * 100


rng = random.Random(SEED)
CASES = [instance(rng) for _ in range(INSTANCES)]


@pytest.mark.parametrize("case", range(INSTANCES), ids=[f"case{n}" for n in range(INSTANCES)])
def test_balanced_above_the_exact_size_is_close_to_the_exhaustive_optimum(case):
    gpus, services = CASES[case]
    assert not balanced_module._exact_fits(len(gpus), len(services))
    best_overflow, best_variance = exhaustive_optimum(case)
    overflow, variance = planned(gpus, services)
    assert overflow == best_overflow
    assert points(variance) <= points(best_variance) + SPREAD_TOLERANCE_POINTS, (
        f"spread {points(variance):.2f} points against an optimum of {points(best_variance):.2f}"
    )
