"""What the recovery tests check after a fault: the stack settled, and workers that kill
themselves at a chosen point."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from applies.models import ApplyRun
from tests.plugins.chaos import KILL_ENV
from tests.plugins.dockerd import SERVICE_LABEL, SERVICES, ComposeStack

ASIDE_MARK = "-gpuconfig-old-"
SETTLE_TIMEOUT = 60  # every service runs again this soon after a fault
CHAOS_RUNTIME = "tests.plugins.chaos.ChaosDockerRuntime"


def worker_env(kill_point: object | None = None, **extra: str) -> dict[str, str]:
    """A worker on the chaos runtime (SIGKILLed at ``kill_point`` when one is given), with
    short health timeouts so a test's rollbacks take seconds."""
    env = {
        "GPUCONFIG_CONTAINER_RUNTIME": CHAOS_RUNTIME,
        "GPUCONFIG_HEALTH_TIMEOUT": "10",
        KILL_ENV: str(kill_point) if kill_point is not None else "",
    }
    env.update(extra)
    return env


def stack_problems(stack: ComposeStack) -> list[str]:
    """Why the stack is not settled yet: a service without exactly one running container, a
    container left aside, or an apply still recorded as running. Empty when settled."""
    problems = []
    per_service: Counter[str] = Counter()
    for listed in stack.containers():
        name = listed["Names"][0].lstrip("/")
        if ASIDE_MARK in name:
            problems.append(f"{name} left aside ({listed['State']})")
            continue
        service = (listed.get("Labels") or {}).get(SERVICE_LABEL)
        per_service[service] += 1
        if listed["State"] != "running":
            problems.append(f"{name} is {listed['State']}")
    for service in SERVICES:
        if per_service[service] != 1:
            problems.append(f"{service} has {per_service[service]} containers")
    running = list(
        ApplyRun.objects.filter(
            status__in=[ApplyRun.Status.RUNNING, ApplyRun.Status.QUEUED]
        ).values_list("operation_id", "status")
    )
    if running:
        problems.append(f"runs not finished: {running}")
    return problems


def wait_settled(stack: ComposeStack, *, since: float, timeout: float = SETTLE_TIMEOUT) -> float:
    """Wait until the stack is settled; return the seconds it took from ``since``."""
    deadline = since + timeout
    problems: list[str] = []
    while time.monotonic() < deadline:
        problems = stack_problems(stack)
        if not problems:
            return time.monotonic() - since
        time.sleep(0.25)
    raise AssertionError(f"not settled {timeout:g}s after the fault: {problems}")


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies nobody reaped do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def wait_dead(worker, timeout: float = 60) -> float:
    """Wait for a worker that is to kill itself, its pool processes included; return when
    (monotonic) it was seen dead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None and not _group_alive(worker.proc.pid):
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"the worker was not killed within {timeout:g}s:\n{worker.log()[-3000:]}")
