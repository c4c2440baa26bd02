"""What the browser tests share: who logs in, screen sizes, screenshots, and page steps."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
STAFF = ("staff", "pw-staff-123")
VIEWER = ("viewer", "pw-viewer-123")


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under var/screenshots/ for people to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def choose_budget_suggestion(page) -> None:
    """Put ai-enrichment on the 4 GB GPU and accept the suggested 3.5 GB budget."""
    gpu = page.get_by_label("GPU for ai-enrichment")
    note = page.locator("#note-ai-enrichment")
    # Leave the 4 GB GPU first, so choosing it is a change the page has to answer.
    gpu.select_option("0")
    expect(note).to_contain_text("Unsaved change")
    gpu.select_option("1")
    use = note.get_by_role("button", name="Use 3.5 GB")
    expect(use).to_be_visible()
    expect(page.locator("#warnings")).to_contain_text("set its VRAM budget to 3.5 GB")
    use.click()
    expect(page.get_by_label("VRAM budget for ai-enrichment (GB)")).to_have_value("3.5")
    expect(note.get_by_role("button", name=re.compile(r"^Use "))).to_have_count(0)
    expect(page.locator("#warnings")).not_to_contain_text("ai-enrichment needs 6.8 GB")


def changed_rows(strategy: str) -> list[str]:
    """The services whose row the strategy's plan changes (GPU or budget) from the saved
    table, as the planner computes them."""
    from assignments.selectors import planning_input
    from front import panels

    table = panels.table_state(panels.plan_choices(strategy), data=planning_input())
    return [row.service.name for row in table.rows if row.changed]
