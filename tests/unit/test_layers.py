"""Boundaries: the inventory app knows nothing of the assignments; test-run flags stay local."""

from __future__ import annotations

import ast
from pathlib import Path

import gpus

GPUS_DIR = Path(gpus.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_gpus_app_imports_nothing_from_assignments():
    """Every import in gpus/ (function-local ones too) stays out of the assignments app."""
    sources = sorted(GPUS_DIR.rglob("*.py"))
    assert len(sources) > 10  # the scan really looked at the app
    offending = {
        str(path.relative_to(GPUS_DIR)): sorted(
            m for m in _imported_modules(path) if m == "assignments" or m.startswith("assignments.")
        )
        for path in sources
    }
    assert {k: v for k, v in offending.items() if v} == {}


def test_the_scan_finds_an_import_of_assignments(tmp_path):
    """The check above can fail: it sees top-level and function-local imports alike."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from assignments.services import config_save\nimport os\n")
    assert _imported_modules(module) == {"assignments.services", "os"}


def test_the_orm_is_not_allowed_beside_an_event_loop_outside_browser_tests():
    """Only the e2e fixtures allow synchronous ORM calls next to Playwright's event loop."""
    import os

    assert "DJANGO_ALLOW_ASYNC_UNSAFE" not in os.environ
