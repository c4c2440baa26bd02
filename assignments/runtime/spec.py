"""What every engine's runtime shares about a container's spec: the VRAM budget in its
environment, the compose labels that find it, the name it carries while set aside, and what a
recreate changes."""

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
