"""The GPU Configuration page in a real browser, against the live server and the simulated
reference hardware (RTX A5500 24 GB + RTX A400 4 GB)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from assignments import planner
from assignments.models import Assignment, ConfigVersion
from tests.conftest import REFERENCE_GPUS, config_files
from tests.e2e.pages import PHONE, STAFF, VIEWER, choose_budget_suggestion, screenshot

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
    for strategy in planner.STRATEGIES.values():
        page.get_by_label("Strategy").select_option(strategy.name)
        page.get_by_role("button", name="Preview Changes").click()
        if strategy.name != "manual":
            expect(plan.locator(".notice")).to_contain_text(f"Preview of {strategy.label}")
        expect(plan.locator("tbody tr")).to_have_count(5)
    page.get_by_label("Strategy").select_option("isolation_first")
    expect(plan.locator(".notice")).to_contain_text("Preview of Isolation-First")
    # Three services move to GPU 1, and ai-enrichment's budget is lowered there.
    expect(plan.locator("tbody tr.is-changed")).to_have_count(4)
    expect(page.locator("#warnings")).to_contain_text("over capacity")
    screenshot(page, "gpu-settings-preview-desktop")

    page.get_by_label("Strategy").select_option("manual")
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
    page.get_by_label("Strategy").select_option("isolation_first")
    page.get_by_role("button", name="Preview Changes").click()
    expect(page.locator("#assignments .notice")).to_contain_text("Preview of Isolation-First")
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
