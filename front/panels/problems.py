"""Front room, the GPU Configuration page's view model: the problems strip: one per problem, each
with the fixes the page can offer.
Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from assignments import planner
from assignments.planner.types import Issue
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
    """The fix that moves one service off an over-full GPU (``planner.overflow_move``)."""
    move = planner.overflow_move(gpu_index, table.gpus, [r.demand for r in table.rows])
    if move is None:
        return None
    demand, gpu = move
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
