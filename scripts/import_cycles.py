"""Tooling: counts import cycles among the project's modules, module-level and function-level
imports alike (grimp's graph), as strongly connected groups (Tarjan). Prints the count and the
groups; exits 1 when there is any. ``tests/unit/test_import_cycles.py`` keeps the count at 0.

Run from the repository root: ``python scripts/import_cycles.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import grimp

# The checkout this script is in, ahead of any installed copy of the project.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PACKAGES = (
    "gpus",
    "assignments",
    "applies",
    "front",
    "ops",
    "fleet",
    "gpuconfig_site",
    "apikeys",
)


def import_graph(packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Each project module and the project modules it imports (anywhere in the module)."""
    present = [name for name in packages if importlib.util.find_spec(name) is not None]
    graph = grimp.build_graph(*present, exclude_type_checking_imports=True)
    edges: dict[str, set[str]] = {m: set() for m in graph.modules}
    for module in edges:
        edges[module] = {m for m in graph.find_modules_directly_imported_by(module) if m in edges}
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected groups of more than one node, sorted."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(groups)


def import_cycles(packages: tuple[str, ...] = PACKAGES) -> list[list[str]]:
    """The import cycles among the packages' modules."""
    return strongly_connected(import_graph(packages))


def main() -> int:
    groups = import_cycles()
    print(len(groups), "cycles (strongly connected groups)")
    for group in groups:
        print(" ", group)
    return 1 if groups else 0


if __name__ == "__main__":
    sys.exit(main())
