"""The project's modules import each other without a cycle, function-level imports included
(``scripts/import_cycles.py``, also run by ``make lint``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "import_cycles.py"


def _script():
    spec = importlib.util.spec_from_file_location("import_cycles", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_count_finds_a_cycle_through_several_modules():
    count = _script()
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert count.strongly_connected(edges) == [["a", "b", "c"]]
    assert count.strongly_connected({"a": {"b"}, "b": set()}) == []


def test_the_project_has_no_import_cycle():
    count = _script()
    graph = count.import_graph()
    # Every room is counted, and function-level imports are edges too.
    assert {"applies.services", "front.views", "ops.health", "gpus.tasks"} <= set(graph)
    assert "applies.models" in graph["ops.logs"]  # imported inside a function there
    assert count.strongly_connected(graph) == []
