"""Test-run flags stay local. (The import boundaries between apps are import-linter contracts
in pyproject.toml, checked by `make lint`.)"""

from __future__ import annotations


def test_the_orm_is_not_allowed_beside_an_event_loop_outside_browser_tests():
    """Only the e2e fixtures allow synchronous ORM calls next to Playwright's event loop."""
    import os

    assert "DJANGO_ALLOW_ASYNC_UNSAFE" not in os.environ
