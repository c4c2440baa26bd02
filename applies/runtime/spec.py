"""Applies room. What every engine's runtime shares about a container's spec: the VRAM budget in
its environment, the compose labels that find it, the name it carries while set aside, and what
a recreate changes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from assignments.planner.types import format_budget_gb

SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"
REPLICA_LABEL = "com.docker.compose.container-number"
BUDGET_ENV = "VRAM_BUDGET_GB"

# An old container waiting for its replacement to prove healthy is renamed to
# "<name>-gpuconfig-old-<first 12 hex digits of its id>". Labels cannot be changed on an existing
# container, so this name is the only mark recovery has to find it after an interrupted apply.
ASIDE_MARK = "-gpuconfig-old-"
ASIDE_NAME = re.compile(r"^(?P<name>.+)" + re.escape(ASIDE_MARK) + r"(?P<short_id>[0-9a-f]{12})$")


# A make-before-break copy started beside the old container is named
# "<name>-gpuconfig-new-<first 12 hex digits of the old one's id>" until it takes the name over
# (handover.py); like the aside name, it is how recovery finds it without a record.
NEW_MARK = "-gpuconfig-new-"


def aside_name(name: str, container_id: str) -> str:
    """The name an old container carries while its replacement is being started."""
    return f"{name}{ASIDE_MARK}{container_id[:12]}"


def original_name(name: str) -> str | None:
    """The name a container set aside had before (None: the name is not an aside name)."""
    match = ASIDE_NAME.match(name)
    return match["name"] if match else None


def replica_number(labels: dict[str, str]) -> int:
    number = labels.get(REPLICA_LABEL, "1")
    return int(number) if number.isdigit() else 1


def budget_of(env: list[str] | None) -> float | None:
    """``VRAM_BUDGET_GB`` from a container environment; None when unset or not a number."""
    value = None
    for entry in env or []:
        key, sep, raw = entry.partition("=")
        if sep and key == BUDGET_ENV:
            value = raw
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def with_budget(env: list[str] | None, budget_gb: float | None) -> list[str]:
    """The environment with ``VRAM_BUDGET_GB`` set to ``budget_gb`` (None: removed), in place."""
    result: list[str] = []
    placed = False
    for entry in env or []:
        if entry.partition("=")[0] == BUDGET_ENV:
            if budget_gb is not None and not placed:
                result.append(f"{BUDGET_ENV}={format_budget_gb(budget_gb)}")
                placed = True
            continue
        result.append(entry)
    if budget_gb is not None and not placed:
        result.append(f"{BUDGET_ENV}={format_budget_gb(budget_gb)}")
    return result


@dataclass(frozen=True, slots=True)
class Replacement:
    """What a recreate changes in a container: its GPU device ids (empty: no GPU) and its
    ``VRAM_BUDGET_GB`` (None: unset). Everything else is copied from the old container."""

    device_ids: tuple[str, ...]
    budget_gb: float | None
    # Set on the new container over the old one's (compose's config hash, say).
    labels: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        gpus = ",".join(self.device_ids) if self.device_ids else "none"
        budget = (
            f"{BUDGET_ENV}={format_budget_gb(self.budget_gb)}"
            if self.budget_gb is not None
            else f"no {BUDGET_ENV}"
        )
        return f"GPU {gpus}, {budget}"


# -- how a container is given its GPU ------------------------------------------------------------

CUDA_ENV = "CUDA_VISIBLE_DEVICES"
NVIDIA_ENV = "NVIDIA_VISIBLE_DEVICES"
NVIDIA_RUNTIME = "nvidia"
_NO_GPU = frozenset({"", "void", "none"})
ALL = "all"


def env_get(env: list[str] | None, key: str) -> str | None:
    """A variable of a container environment (the last one wins, as in the process)."""
    value = None
    for entry in env or []:
        name, sep, raw = entry.partition("=")
        if sep and name == key:
            value = raw
    return value


def with_env(env: list[str] | None, key: str, value: str | None) -> list[str]:
    """The environment with ``key`` set to ``value`` in place (None: removed)."""
    result, placed = [], False
    for entry in env or []:
        if entry.partition("=")[0] == key:
            if value is not None and not placed:
                result.append(f"{key}={value}")
                placed = True
            continue
        result.append(entry)
    if value is not None and not placed:
        result.append(f"{key}={value}")
    return result


def _ids(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def _exposed(exposed: tuple[str, ...], env: list[str] | None, runtime: str | None):
    if not exposed and runtime == NVIDIA_RUNTIME:
        visible = env_get(env, NVIDIA_ENV)
        if visible is not None:
            return tuple(i for i in _ids(visible) if i not in _NO_GPU)
    return tuple(exposed)


def gpus_used(
    exposed: tuple[str, ...], env: list[str] | None, *, runtime: str | None = None
) -> tuple[str, ...]:
    """The GPUs a container's CUDA code uses: the ones it is given (``exposed``; with the
    nvidia runtime and nothing else given, ``NVIDIA_VISIBLE_DEVICES``), narrowed by
    ``CUDA_VISIBLE_DEVICES`` (positions among the given ones; indexes when every GPU is)."""
    exposed = _exposed(exposed, env, runtime)
    cuda = env_get(env, CUDA_ENV)
    if cuda is None or not exposed:
        return exposed
    if exposed == (ALL,):
        return _ids(cuda)
    used = []
    for item in _ids(cuda):
        if not item.isdigit():
            used.append(item)
        elif int(item) < len(exposed):
            used.append(exposed[int(item)])
        else:
            break  # CUDA stops at the first id that names no visible device
    return tuple(used)


@dataclass(frozen=True, slots=True)
class GpuChange:
    """How a copy of a container gets ``device_ids`` the way the old one got its GPU:
    ``exposed`` the GPUs to give it (None: keep what the old one is given), ``env`` the
    variables to set (None: remove)."""

    exposed: tuple[str, ...] | None
    env: Mapping[str, str | None] = field(default_factory=dict)

    def environment(self, env: list[str] | None) -> list[str]:
        for key, value in self.env.items():
            env = with_env(env, key, value)
        return list(env or [])


def gpu_change(
    exposed: tuple[str, ...],
    env: list[str] | None,
    device_ids: tuple[str, ...],
    *,
    runtime: str | None = None,
) -> GpuChange:
    """The change that gives a container ``device_ids`` in its own form: a container that
    selects with ``CUDA_VISIBLE_DEVICES`` keeps what it is given and selects anew (when the
    GPU is among them); one on the nvidia runtime gets ``NVIDIA_VISIBLE_DEVICES``; any other
    is given ``device_ids``."""
    target = tuple(device_ids)
    if not exposed and runtime == NVIDIA_RUNTIME and env_get(env, NVIDIA_ENV) is not None:
        return GpuChange(None, {NVIDIA_ENV: ",".join(target) or "void"})
    given = _exposed(exposed, env, runtime)
    if env_get(env, CUDA_ENV) is not None and given and target:
        if given == (ALL,):
            return GpuChange(None, {CUDA_ENV: ",".join(target)})
        if all(t in given for t in target):
            return GpuChange(None, {CUDA_ENV: ",".join(str(given.index(t)) for t in target)})
        return GpuChange(target, {CUDA_ENV: ",".join(str(i) for i in range(len(target)))})
    return GpuChange(target)
