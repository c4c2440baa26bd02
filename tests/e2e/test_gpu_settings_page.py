"""The GPU Configuration page in a real browser, against the live server and the simulated
reference hardware (RTX A5500 24 GB + RTX A400 4 GB)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from assignments import planner
from assignments.models import Assignment, ConfigVersion
from assignments.services import config_save
from tests.conftest import REFERENCE_GPUS, config_files
from tests.e2e.pages import (
    PHONE,
    STAFF,
    VIEWER,
    changed_rows,
    choose_budget_suggestion,
    screenshot,
)

pytestmark = pytest.mark.e2e


def test_anonymous_visitor_is_sent_to_login(browsing):
    page = browsing.page()
    page.goto("/settings/gpu/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/settings/gpu/$"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def test_staff_previews_every_strategy_and_saves_a_suggested_budget(
    browsing, reference_gpus, staff_user, settings
):
    page = browsing.login(*STAFF)
    expect(page.get_by_text("Simulated GPUs.")).to_be_visible()
    cards = page.locator("#gpu-cards .gpu-card")
    expect(cards).to_have_count(2)
    expect(cards.nth(0)).to_contain_text("NVIDIA RTX A5500")
    expect(cards.nth(0)).to_contain_text("19.3 of 24.0 GB in use")
    expect(cards.nth(1)).to_contain_text("NVIDIA RTX A400")
    expect(cards.nth(1)).to_contain_text("0.3 of 4.0 GB in use")
    expect(cards.locator("svg polyline.spark-util")).to_have_count(2)
    screenshot(page, "gpu-settings-desktop")
    phone = browsing.login(*STAFF, viewport=PHONE)
    expect(phone.locator("#gpu-cards .gpu-card")).to_have_count(2)
    screenshot(phone, "gpu-settings-phone")

    plan = page.locator("#assignments")
    notice = plan.locator("p.notice[role=status]")
    for strategy in planner.STRATEGIES.values():
        # Choosing a strategy previews it at once; Preview Changes asks again. Each step waits
        # for the answer of its own strategy, so no preview is still in flight at the next.
        page.get_by_label("Strategy").select_option(strategy.name)
        expect(notice).to_contain_text(f"Preview of {strategy.label}:")
        page.get_by_role("button", name="Preview Changes").click()
        expect(notice).to_contain_text(f"Preview of {strategy.label}:")
        expect(page.get_by_label("Strategy")).to_have_value(strategy.name)
        expect(plan.locator("tbody tr")).to_have_count(5)
    # From the saved table again: Isolation-First moves the rows the planner says it moves.
    page.reload()
    moved = changed_rows("isolation_first")
    assert moved
    page.get_by_label("Strategy").select_option("isolation_first")
    expect(notice).to_contain_text("Preview of Isolation-First")
    expect(plan.locator("tbody tr.is-changed")).to_have_count(len(moved))
    for name in moved:
        expect(plan.locator(f"#row-{name}")).to_have_class(re.compile(r"\bis-changed\b"))
    # The problems follow the previewed table, not the saved one.
    expect(page.locator("#warnings")).to_contain_text("Unsaved changes")
    problems = page.locator("#warnings .problem").count()
    expect(page.locator("#problem-count")).to_have_text(
        f"{problems} problem{'s' if problems != 1 else ''}" if problems else "No problems"
    )
    screenshot(page, "gpu-settings-preview-desktop")

    # Back to the saved table; an edit there is saved as Manual.
    page.reload()
    expect(plan.locator("tbody tr.is-changed")).to_have_count(0)
    before = config_files(settings)
    choose_budget_suggestion(page)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#assignments")).to_contain_text("Saved as version")
    expect(page.locator("#history")).to_contain_text("Manual")

    after = config_files(settings)
    assert before["docker-compose.gpu-override.yml"] and before["gpu-assignments.yml"]
    for name in after:
        assert after[name] != before[name], name
    assert "VRAM_BUDGET_GB=3.5" in after["docker-compose.gpu-override.yml"]
    assert "VRAM_BUDGET_GB=3.5" not in before["docker-compose.gpu-override.yml"]
    assert "3.5" in after["gpu-assignments.yml"]
    assert Assignment.objects.get(service__name="ai-enrichment").vram_budget_override == 3.5
    screenshot(page, "gpu-settings-saved-desktop")


def test_a_save_the_server_refuses_shows_why_and_changes_nothing(
    browsing, reference_gpus, staff_user, settings
):
    page = browsing.login(*STAFF)
    before = (ConfigVersion.objects.count(), config_files(settings))
    page.get_by_label("VRAM budget for ai-enrichment (GB)").fill("2000")
    page.get_by_role("button", name="Save", exact=True).click()
    alert = page.locator("#assignments [role=alert]")
    expect(alert).to_contain_text("Nothing was saved.")
    expect(alert).to_contain_text("a VRAM budget of 2000 GB is more than the 1024 GB limit")
    assert (ConfigVersion.objects.count(), config_files(settings)) == before


def test_no_gpus_detected_then_rescan_finds_them(browsing, e2e, simulated_gpus, staff_user):
    from gpus.services import gpu_scan_run

    simulated_gpus.write_text("[]\n")
    gpu_scan_run()
    page = browsing.login(*STAFF)
    expect(page.get_by_role("heading", name="No GPUs detected")).to_be_visible()
    expect(page.locator("#gpu-cards ol li")).to_have_count(4)
    expect(page.locator("#gpu-cards")).to_contain_text("nvidia-smi")
    screenshot(page, "gpu-settings-no-gpus-desktop")
    phone = browsing.login(*STAFF, viewport=PHONE)
    expect(phone.get_by_role("heading", name="No GPUs detected")).to_be_visible()
    screenshot(phone, "gpu-settings-no-gpus-phone")

    simulated_gpus.write_text(REFERENCE_GPUS.read_text())
    page.get_by_role("button", name="Re-scan GPUs").click()
    expect(page.locator("#gpu-cards .gpu-card")).to_have_count(2)
    expect(page.get_by_role("heading", name="No GPUs detected")).to_have_count(0)
    # The table follows the new inventory: the 4 GB GPU can now be chosen.
    expect(page.get_by_label("GPU for ai-enrichment").locator("option")).to_have_count(3)


def test_viewer_sees_read_only_page_and_cannot_save(browsing, reference_gpus, plain_user):
    page = browsing.login(*VIEWER)
    expect(page.get_by_text("You are viewing the GPU configuration read-only")).to_be_visible()
    expect(page.get_by_label("GPU for ai-llm")).to_be_disabled()
    expect(page.get_by_role("button", name="Apply & Restart Services")).to_be_disabled()
    save = page.get_by_role("button", name="Save", exact=True)
    expect(save).to_be_disabled()
    versions = ConfigVersion.objects.count()
    # Even a form forced open is refused by the server.
    page.evaluate("document.getElementById('save-button').disabled = false")
    save.click()
    expect(page.locator("#assignments [role=alert]")).to_contain_text("needs a staff account")
    assert ConfigVersion.objects.count() == versions
    screenshot(page, "gpu-settings-viewer-desktop")


def test_keyboard_alone_can_move_a_service_and_accept_the_suggestion(
    browsing, reference_gpus, staff_user
):
    page = browsing.login(*STAFF)
    gpu = page.get_by_label("GPU for ai-enrichment")
    gpu.focus()
    page.keyboard.press("ArrowUp")  # GPU 1 → GPU 0
    expect(gpu).to_have_value("0")
    expect(page.locator("#note-ai-enrichment")).to_contain_text("Unsaved change")
    page.keyboard.press("ArrowDown")  # back to the 4 GB GPU
    use = page.locator("#note-ai-enrichment").get_by_role("button", name="Use 3.5 GB")
    expect(use).to_be_visible()
    page.keyboard.press("Tab")
    expect(use).to_be_focused()
    page.keyboard.press("Enter")
    budget = page.get_by_label("VRAM budget for ai-enrichment (GB)")
    expect(budget).to_have_value("3.5")
    expect(budget).to_be_focused()
    page.keyboard.press("Enter")  # submits the form: Save
    expect(page.locator("#assignments")).to_contain_text("Saved as version")
    assert Assignment.objects.get(service__name="ai-enrichment").vram_budget_override == 3.5


def test_without_javascript_the_page_reads_and_saves_with_plain_posts(
    browsing, reference_gpus, staff_user
):
    page = browsing.login(*STAFF, javascript=False)
    expect(page.locator("#gpu-cards .gpu-card")).to_have_count(2)
    expect(page.locator("#gpu-cards")).to_contain_text("19.3 of 24.0 GB in use")
    page.get_by_label("Strategy").select_option("manual")
    page.get_by_role("button", name="Preview Changes").click()
    expect(page.locator("#assignments .notice")).to_contain_text("Preview of Manual")
    use = page.locator("#note-ai-enrichment").get_by_role("button", name=re.compile(r"^Use "))
    value = use.inner_text().split()[1]
    use.click()
    expect(page.get_by_label("VRAM budget for ai-enrichment (GB)")).to_have_value(value)
    expect(page.get_by_label("Strategy")).to_have_value("manual")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page).to_have_url(re.compile(r"/settings/gpu/#assignments$"))
    expect(page.locator(".messages")).to_contain_text("Saved as version")
    assert Assignment.objects.get(service__name="ai-enrichment").vram_budget_override == float(
        value
    )
    screenshot(page, "gpu-settings-no-javascript-desktop")


def test_without_javascript_a_fix_button_posts_the_table_with_its_one_change(
    browsing, reference_gpus, staff_user
):
    # ai-enrichment fits GPU 1 at 2 GB; GPU 0 still holds 25.1 GB of 24, and a move fixes it.
    config_save(
        assignments=[{"service": "ai-enrichment", "gpu_index": 1, "vram_budget_override": 2.0}]
    )
    page = browsing.login(*STAFF, javascript=False)
    move = page.locator("#warnings .problem").get_by_role("button", name=re.compile(r"^Move "))
    expect(move.first).to_be_visible()
    _, service, _, _, gpu = move.first.inner_text().split()
    saved = Assignment.objects.get(service__name=service).gpu_index
    assert saved != int(gpu)
    move.first.click()
    # The page comes back with that one change in the table, unsaved and marked as Manual.
    expect(page.get_by_label(f"GPU for {service}")).to_have_value(gpu)
    expect(page.locator(f"#row-{service}")).to_have_class(re.compile(r"\bis-changed\b"))
    expect(page.locator("#row-ai-llm")).not_to_have_class(re.compile(r"\bis-changed\b"))
    expect(page.get_by_label("Strategy")).to_have_value("manual")
    assert Assignment.objects.get(service__name=service).gpu_index == saved
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messages")).to_contain_text("Saved as version")
    assert Assignment.objects.get(service__name=service).gpu_index == int(gpu)
