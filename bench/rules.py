"""How long planning takes with the user's rules, per strategy, at 64 services × 8 GPUs.

Run ``python -m bench rules`` from the project root. Each seeded instance (the planner bench's
inventories) gets rules a box might have: the largest service pinned and exclusive, a few pins,
a dozen "never with" pairs and priorities; one instance in three also has rules that cannot all
hold (more exclusive services than GPUs), so the conflict search is timed too. Prints the median
time of one ``plan()`` call in milliseconds. Figures only; the target is under 50 ms.
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

from assignments.planner import ServiceRule, plan, strategy_names
from bench.planner import make_instance

SIZE = (64, 8)
INSTANCES = 6
REPEATS = 5
SEED = 20261204


def make_rules(rng: random.Random, gpus, services, *, conflicting: bool) -> list[ServiceRule]:
    names = [s.name for s in services]
    rules: dict[str, dict] = {name: {} for name in names}
    rules[names[0]].update(pin_gpu_uuid=gpus[0].uuid, exclusive=True, priority=10)
    for name in rng.sample(names[1:], 4):
        rules[name]["pin_gpu_uuid"] = rng.choice(gpus[1:]).uuid
    for _ in range(12):
        a, b = rng.sample(names[1:], 2)
        rules[a].setdefault("never_with", []).append(b)
    for name in rng.sample(names, 10):
        rules[name]["priority"] = rng.randint(1, 5)
    if conflicting:
        for name in rng.sample(names[1:], len(gpus)):
            rules[name]["exclusive"] = True
    return [
        ServiceRule(
            service=name,
            pin_gpu_uuid=r.get("pin_gpu_uuid"),
            exclusive=r.get("exclusive", False),
            never_with=tuple(r.get("never_with", ())),
            priority=r.get("priority", 0),
        )
        for name, r in rules.items()
        if r
    ]


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the table, and return the medians (``argv`` takes no options)."""
    rng = random.Random(SEED)
    instances = []
    for n in range(INSTANCES):
        gpus, services = make_instance(rng, *SIZE)
        instances.append((gpus, services, make_rules(rng, gpus, services, conflicting=n % 3 == 2)))
    results = {}
    conflicts = 0
    for name in strategy_names():
        samples = []
        for gpus, services, rules in instances:
            result = plan(name, gpus, services, rules)  # warm-up
            conflicts += any(i.code == "rule_conflict" for i in result.issues)
            for _ in range(REPEATS):
                start = time.perf_counter()
                plan(name, gpus, services, rules)
                samples.append((time.perf_counter() - start) * 1000)
        results[name] = statistics.median(samples)
    print(
        f"Median plan() time with rules, {SIZE[0]} services × {SIZE[1]} GPUs, "
        f"{INSTANCES} seeded instances × {REPEATS} runs ({conflicts} plans with a rule conflict)"
    )
    width = max(len(name) for name in results)
    for name, ms in results.items():
        print(f"{name.ljust(width)}  {ms:8.3f} ms  (max {max_ms(name, instances):.3f} ms)")
    return results


def max_ms(name: str, instances) -> float:
    """The slowest single plan() of ``name`` over the instances (one run each)."""
    worst = 0.0
    for gpus, services, rules in instances:
        start = time.perf_counter()
        plan(name, gpus, services, rules)
        worst = max(worst, (time.perf_counter() - start) * 1000)
    return worst


if __name__ == "__main__":
    main()
