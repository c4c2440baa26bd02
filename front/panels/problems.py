"""Front room, the GPU Configuration page's view model: the problems strip: one per problem, each
with the fixes the page can offer.
Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from assignments import planner
from assignments.planner.types import Issue, Placement
from front.panels.table import TableState


@dataclass(frozen=True)
class Fix:
    """A one-click fix: put ``value`` into the field of ``service`` (its budget or its GPU)."""

    label: str
    service: str
    kind: str  # "budget" or "gpu"
    value: str


@dataclass(frozen=True)
class Problem:
    code: str
    severity: str  # "error" or "warning"
    message: str
    fixes: tuple[Fix, ...] = ()
    details: tuple[str, ...] = ()


SEVERE = {"over_capacity", "gpu_missing", "unplaced", "budget_too_large"}


def _move_fix(gpu_index: int, table: TableState) -> Fix | None:
    """Move one service off an over-full GPU onto another available GPU where it fits; the
    smallest service that clears the overflow, else the largest that fits."""
    services = [r.demand for r in table.rows]
    placements = [Placement(d.name, d.current_gpu, d.budget_gb) for d in services]
    free = planner.free_mb(table.gpus, services, placements)
    overflow = -free.get(gpu_index, 0)
    here = sorted((d for d in services if d.current_gpu == gpu_index), key=lambda d: d.effective_mb)
    # A GPU an isolated service has to itself stays so: a fix must not undo the isolation the
    # plan (Isolation-First) made.
    isolated_alone = {
        g.index
        for g in table.gpus
        if (on := [d for d in services if d.current_gpu == g.index]) and all(d.isolated for d in on)
    }
    others = [
        g
        for g in table.gpus
        if g.available and g.index != gpu_index and g.index not in isolated_alone
    ]
    fitting = [
        (d, g)
        for d in here
        for g in sorted(others, key=lambda g: -free[g.index])
        if free[g.index] >= d.effective_mb
    ]
    if not fitting:
        return None
    clears = [(d, g) for d, g in fitting if d.effective_mb >= overflow]
    demand, gpu = clears[0] if clears else fitting[-1]
    return Fix(f"Move {demand.name} to GPU {gpu.index}", demand.name, "gpu", str(gpu.index))


def problems(table: TableState) -> list[Problem]:
    """The table's warnings, one per problem: a GPU's over-capacity and the budget warnings of
    the services on it are one problem, whose fixes are the suggested budget and a move."""
    out: list[Problem] = []
    by_gpu: dict[int, list[Issue]] = {}
    seen: set[str] = set()
    for issue in table.issues:
        if issue.message in seen:
            continue
        seen.add(issue.message)
        if issue.code in ("over_capacity", "budget_suggestion", "budget_too_large"):
            gpu = issue.gpu_index
            if gpu is None and issue.service:
                gpu = next(
                    (r.chosen.gpu_index for r in table.rows if r.service.name == issue.service),
                    None,
                )
            if gpu is not None:
                by_gpu.setdefault(gpu, []).append(issue)
                continue
        out.append(
            Problem(issue.code, "error" if issue.code in SEVERE else "warning", issue.message)
        )
    for gpu, issues in sorted(by_gpu.items()):
        main = next((i for i in issues if i.code == "over_capacity"), issues[0])
        fixes = [
            Fix(
                f"Use {i.suggested_budget_gb:.1f} GB",
                i.service,
                "budget",
                f"{i.suggested_budget_gb:.1f}",
            )
            for i in issues
            if i.suggested_budget_gb is not None and i.service
        ]
        if any(i.code == "over_capacity" for i in issues):
            move = _move_fix(gpu, table)
            if move is not None:
                fixes.append(move)
        out.insert(
            0,
            Problem(
                main.code,
                "error" if any(i.code in SEVERE for i in issues) else "warning",
                main.message,
                tuple(fixes),
                tuple(i.message for i in issues if i is not main),
            ),
        )
    return out
