"""Wall time of applying a GPU move to 1, 3 and 5 services on Docker and on Podman, next to
doing it by hand.

    python bench/apply.py [--rounds N]

Starts the test Docker engine (scripts/test-dockerd.sh) if it is not running, brings the five
stand-in services up under compose, and for each size moves that many services from GPU 0 to
GPU 1 with ``diff`` + ``execute``, then back with the same recreations done one by one through
bare docker SDK calls (stop, rename, create, start, wait healthy, remove). Then the same moves
with the Podman runtime against the private Podman service (scripts/test-podman.sh, stopped
again afterwards) and podman-compose, moving back with ``execute`` untimed. Each figure is the
median of the rounds. The stand-ins' healthcheck runs every second, so most of a recreate is
waiting for its first check; the ratio is what parallel recreation buys.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import docker

from applies.applying import Target, diff, execute
from applies.runtime.base import ContainerRuntime, Outcome
from applies.runtime.docker import DockerRuntime
from applies.runtime.podman import PodmanRuntime
from tests.plugins.dockerd import SERVICES, engine_host, running_stack
from tests.plugins.podman import running_podman_stack, service_start, service_stop

SIZES = (1, 3, 5)
HEALTH_TIMEOUT = 30.0
POLL = 0.2


def apply_with_execute(runtime: ContainerRuntime, services: tuple[str, ...], gpu: str) -> float:
    targets = [Target(s, (gpu,), None, latency_critical=False) for s in services]
    began = time.perf_counter()
    results = execute(
        runtime, diff(runtime, targets), progress=lambda *_: None, health_timeout=HEALTH_TIMEOUT
    )
    elapsed = time.perf_counter() - began
    bad = {s: r.message for s, r in results.items() if r.outcome != Outcome.HEALTHY}
    if bad or len(results) != len(services):
        raise SystemExit(f"execute did not move {services} to GPU {gpu}: {bad or results}")
    return elapsed


def recreate_by_hand(api: docker.APIClient, name: str, gpu: str) -> None:
    """One recreate with plain SDK calls and none of the runtime's checks or rollback."""
    old = api.inspect_container(name)
    config = copy.deepcopy(old["Config"])
    config.pop("Hostname", None)
    host_config = copy.deepcopy(old["HostConfig"])
    host_config["DeviceRequests"] = [
        {"Driver": "nvidia", "Count": 0, "DeviceIDs": [gpu], "Capabilities": [["gpu"]]}
    ]
    api.stop(old["Id"])
    api.rename(old["Id"], f"{name}-old")
    new = api.create_container_from_config({**config, "HostConfig": host_config}, name=name)
    api.start(new["Id"])
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while api.inspect_container(new["Id"])["State"]["Health"]["Status"] != "healthy":
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not become healthy by hand")
        time.sleep(POLL)
    api.remove_container(old["Id"])


def apply_by_hand(api: docker.APIClient, names: list[str], gpu: str) -> float:
    began = time.perf_counter()
    for name in names:
        recreate_by_hand(api, name, gpu)
    return time.perf_counter() - began


def timed_moves(
    runtime: ContainerRuntime, rounds: int, back: Callable[[tuple[str, ...]], float] | None
) -> dict[int, tuple[float, float | None]]:
    """Per size: the median time of ``execute`` moving to GPU 1, and of ``back`` moving to GPU 0
    (None: moved back with ``execute``, untimed)."""
    figures = {}
    for size in SIZES:
        services = SERVICES[:size]
        timed_execute, timed_back = [], []
        for _ in range(rounds):
            timed_execute.append(apply_with_execute(runtime, services, "1"))
            if back is None:
                apply_with_execute(runtime, services, "0")
            else:
                timed_back.append(back(services))
        figures[size] = (
            statistics.median(timed_execute),
            statistics.median(timed_back) if timed_back else None,
        )
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="measurements per figure (median)")
    args = parser.parse_args(argv)

    os.environ["DOCKER_HOST"] = engine_host()
    client = docker.from_env()
    api = client.api
    with tempfile.TemporaryDirectory(prefix="gpuconfig-bench-") as tmp:
        with running_stack(Path(tmp) / "stack") as stack:
            runtime = DockerRuntime(project=stack.project, health_timeout=HEALTH_TIMEOUT)
            names = {s: stack.container(s)["Name"].lstrip("/") for s in SERVICES}
            on_docker = timed_moves(
                runtime,
                args.rounds,
                lambda services: apply_by_hand(api, [names[s] for s in services], "0"),
            )
        service = service_start()
        try:
            with running_podman_stack(service, Path(tmp) / "podman-stack") as podman_stack:
                runtime = PodmanRuntime(
                    project=podman_stack.project,
                    health_timeout=HEALTH_TIMEOUT,
                    base_url=service.host,
                )
                on_podman = timed_moves(runtime, args.rounds, None)
                podman_version = service.podman("version", "--format", "{{.Server.Version}}")
        finally:
            service_stop()
    engine_version = api.version()["Version"]
    client.close()

    print(
        f"apply bench: dockerd {engine_version} at {os.environ['DOCKER_HOST']}, "
        f"podman {podman_version.stdout.strip()} at {service.host}, median of {args.rounds} rounds"
    )
    print(
        f"{'services':>8}  {'docker execute (s)':>18}  {'one by one (s)':>14}  {'speed-up':>8}"
        f"  {'podman execute (s)':>18}"
    )
    for size in SIZES:
        fast, slow = on_docker[size]
        print(
            f"{size:>8}  {fast:>18.2f}  {slow:>14.2f}  {slow / fast:>7.2f}x"
            f"  {on_podman[size][0]:>18.2f}"
        )


if __name__ == "__main__":
    main()
