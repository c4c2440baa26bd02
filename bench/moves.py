"""Downtime per move, by mode: the same service moved between GPU 0 and GPU 1 make-before-break
(``zero_downtime``) and stop-start (``restart``) on the test Docker engine, with a probe asking
its network alias every 100 ms, and the service that publishes a host port (which always
restarts).

    python -m bench moves        python bench/moves.py [--rounds N]

For each move: the downtime the runtime measured (``downtime_s``), the probes that failed and
the longest gap the probe saw. ``GPUCONFIG_DRAIN_S`` is 1 s here (5 s by default).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpuconfig_site.settings")
os.environ.setdefault("GPUCONFIG_DRAIN_S", "1")

import django  # noqa: E402

django.setup()

from applies.runtime.docker import DockerRuntime  # noqa: E402
from applies.runtime.handover import RESTART, ZERO_DOWNTIME  # noqa: E402
from tests.plugins.dockerd import engine_host  # noqa: E402
from tests.plugins.webstack import ALIASED, PORTED, gaps, running_web_stack  # noqa: E402

HEALTH_TIMEOUT = 30.0


def one_move(stack, runtime, service: str, mode: str, gpu: str) -> tuple[float, int, float]:
    """Move ``service`` to ``gpu`` in ``mode`` while a fresh probe asks it; returns the measured
    downtime, the failed probes and the longest gap the probe saw."""
    probe = stack.probe(service)
    time.sleep(1.0)
    result = runtime.recreate(
        service,
        device_ids=(gpu,),
        budget_gb=None,
        progress=lambda *_: None,
        health_timeout=HEALTH_TIMEOUT,
        **({"move_mode": ZERO_DOWNTIME} if mode == ZERO_DOWNTIME else {}),
    )
    time.sleep(1.0)
    if str(result.outcome) != "healthy":
        raise SystemExit(f"{service} ({mode}) did not move: {result.message}")
    failed, gap = gaps(stack.answers(probe))
    stack.api.remove_container(probe, force=True)
    stack.probes.remove(probe)
    return result.downtime_s or 0.0, failed, gap


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ["DOCKER_HOST"] = engine_host()
    os.environ.pop("CONTAINER_HOST", None)
    cases = [
        (ALIASED, ZERO_DOWNTIME),
        (ALIASED, RESTART),
        (PORTED, RESTART),
    ]
    with tempfile.TemporaryDirectory() as tmp, running_web_stack(Path(tmp) / "web") as stack:
        runtime = DockerRuntime(project=stack.project, health_timeout=HEALTH_TIMEOUT)
        gpu = {ALIASED: "0", PORTED: "0"}
        print(f"  {args.rounds} moves per row, probe every 100 ms, drain 1 s")
        print(f"  {'service':<12} {'mode':<14} {'downtime_s':>11} {'failed':>7} {'gap':>7}")
        for service, mode in cases:
            rows = []
            for _ in range(args.rounds):
                gpu[service] = "1" if gpu[service] == "0" else "0"
                rows.append(one_move(stack, runtime, service, mode, gpu[service]))
            downtime = statistics.median(r[0] for r in rows)
            failed = max(r[1] for r in rows)
            gap = statistics.median(r[2] for r in rows)
            print(
                f"  {service:<12} {mode:<14} {downtime:>10.2f}s {failed:>7} {gap:>6.2f}s"
                "   (median downtime and gap, most failed probes)",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
