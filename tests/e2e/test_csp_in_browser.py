"""Under the Content-Security-Policy header, the page (HTMX) and the API docs (Swagger UI)
still work in a real browser, and the browser reports no violation."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.pages import STAFF

pytestmark = pytest.mark.e2e


def _violations(page) -> list[str]:
    seen: list[str] = []
    page.on(
        "console",
        lambda message: (
            seen.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return seen


def test_the_page_previews_a_strategy_with_no_policy_violation(
    browsing, reference_gpus, staff_user
):
    page = browsing.login(*STAFF)
    violations = _violations(page)
    page.reload()
    expect(page.locator("#gpu-cards .gpu-card")).to_have_count(2)
    page.get_by_label("Strategy").select_option("balanced")  # an HTMX request and swap
    expect(page.locator("#assignments p.notice[role=status]")).to_contain_text(
        "Preview of Balanced"
    )
    assert violations == []


def test_the_api_docs_render_the_operations_with_no_policy_violation(
    browsing, reference_gpus, staff_user
):
    page = browsing.login(*STAFF)
    violations = _violations(page)
    page.goto("/api/docs/")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.get_by_text("/api/system/gpu-config/services").first).to_be_visible()
    assert violations == []
