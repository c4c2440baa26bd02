"""The flows a newcomer follows, in a real browser against the simulated reference hardware
(RTX A5500 24 GB + RTX A400 4 GB): pick a plan and save it, edit it, fix the problems the
status strip counts, and, with no container engine, try Apply on the demo runtime."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from rest_framework.test import APIClient

from gpuconfig_site.celery import app as celery_app
from tests.conftest import API_KEY
from tests.e2e.pages import PHONE, STAFF, changed_rows, choose_budget_suggestion, screenshot

pytestmark = pytest.mark.e2e

APPLY_TIMEOUT_MS = 60_000


@pytest.fixture
def no_engine(monkeypatch, tmp_path):
    """The container engine's socket points at nothing."""
    host = f"unix://{tmp_path}/no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    return host


def api(path: str) -> dict:
    return APIClient(headers={"X-API-Key": API_KEY}).get(f"/api/system{path}").json()


def gpus_of(assignments: list[dict]) -> dict[str, int | None]:
    return {a["service"]: a["gpu_index"] for a in assignments}


def test_a_chosen_strategy_is_previewed_in_the_table_and_saved_as_shown(
    browsing, reference_gpus, staff_user
):
    page = browsing.login(*STAFF)
    page.get_by_label("Strategy").select_option("isolation_first")
    plan = page.locator("#assignments")
    expect(plan.locator(".notice")).to_contain_text(
        "Preview of Isolation-First: 3 services would move (highlighted)"
    )
    # The moves, and the budget the strategy lowers where that makes its plan fit.
    expect(plan.locator("tbody tr.is-changed")).to_have_count(len(changed_rows("isolation_first")))
    expect(page.get_by_role("button", name=re.compile(r"^Isolation-First"))).to_have_attribute(
        "aria-pressed", "true"
    )
    screenshot(page, "flow-preview-desktop")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(plan).to_contain_text("Saved as version")
    expect(plan).to_contain_text("strategy Isolation-First;")

    saved = api("/gpu-config")
    assert saved["strategy"] == "isolation_first"
    proposed = api("/gpu-config/preview?strategy=isolation_first")["proposed_assignments"]
    assert gpus_of(saved["assignments"]) == gpus_of(proposed)

    # The guide's revert: choose VRAM-Based (here by its card), preview, save.
    page.get_by_role("button", name=re.compile(r"^VRAM-Based")).click()
    expect(plan.locator(".notice")).to_contain_text("Preview of VRAM-Based")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(plan).to_contain_text("strategy VRAM-Based")
    saved = api("/gpu-config")
    assert saved["strategy"] == "vram_based"
    proposed = api("/gpu-config/preview?strategy=vram_based")["proposed_assignments"]
    assert gpus_of(saved["assignments"]) == gpus_of(proposed)


def test_a_plan_edited_after_loading_is_saved_as_manual(browsing, reference_gpus, staff_user):
    page = browsing.login(*STAFF)
    page.get_by_role("button", name=re.compile(r"^Isolation-First")).click()
    expect(page.locator("#assignments .notice")).to_contain_text("Preview of Isolation-First")
    loaded = page.get_by_label("GPU for ai-llm").input_value()
    edited = "1" if loaded == "0" else "0"
    page.get_by_label("GPU for ai-llm").select_option(edited)
    expect(page.get_by_label("Strategy")).to_have_value("manual")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#assignments")).to_contain_text("strategy Manual;")
    saved = api("/gpu-config")
    assert saved["strategy"] == "manual"
    assert gpus_of(saved["assignments"])["ai-llm"] == int(edited)


def test_the_status_strip_counts_the_problems_and_the_fix_buttons_fix_them(
    browsing, reference_gpus, staff_user
):
    page = browsing.login(*STAFF)
    # ai-enrichment on the 4 GB GPU with a 2 GB budget: GPU 0 still holds 25.1 GB of 24.
    page.get_by_label("GPU for ai-enrichment").select_option("1")
    page.get_by_label("VRAM budget for ai-enrichment (GB)").fill("2")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#assignments")).to_contain_text("Saved as version")
    page.reload()
    strip = page.locator("#status-strip")
    expect(strip).to_contain_text("Simulated GPUs")
    expect(strip).to_contain_text("2 GPUs")
    expect(strip).to_contain_text("Never applied")
    problems = page.locator("#warnings .problem")
    expect(problems).to_have_count(1)
    expect(strip.locator("#problem-count")).to_have_text("1 problem")
    expect(problems).to_contain_text("GPU 0 (RTX A5500) is over capacity by 1.1 GB")
    screenshot(page, "flow-problems-desktop")
    phone = browsing.login(*STAFF, viewport=PHONE)
    expect(phone.locator("#status-strip")).to_contain_text("1 problem")
    screenshot(phone, "flow-problems-phone")

    # The smallest service whose move clears the overflow, onto the GPU where it fits.
    problems.get_by_role("button", name="Move ai-clip to GPU 1").click()
    expect(page.get_by_label("GPU for ai-clip")).to_have_value("1")
    expect(problems).to_have_count(0)
    expect(strip.locator("#problem-count")).to_have_text("No problems")

    # Back to the default budget: GPU 1 overflows, and its fix is the suggested budget.
    budget = page.get_by_label("VRAM budget for ai-enrichment (GB)")
    budget.fill("")
    budget.dispatch_event("change")
    expect(strip.locator("#problem-count")).to_have_text("1 problem")
    use = problems.get_by_role("button", name=re.compile(r"^Use \d+\.\d GB$"))
    expect(use).to_have_count(1)
    value = use.inner_text().split()[1]
    use.click()
    expect(budget).to_have_value(value)
    expect(strip.locator("#problem-count")).to_have_text("No problems")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#assignments")).to_contain_text("strategy Manual;")
    assert api("/gpu-config")["warnings"] == []


def test_without_an_engine_the_page_says_so_before_anyone_clicks(
    browsing, reference_gpus, staff_user, no_engine
):
    page = browsing.login(*STAFF)
    notice = page.locator("#engine-notice")
    expect(notice).to_contain_text("No container engine is reachable")
    expect(notice).to_contain_text("DOCKER_HOST")
    expect(notice.get_by_role("button", name="Try it with Simulated containers")).to_be_visible()
    expect(page.locator("#status-strip")).to_contain_text("No container engine")
    expect(page.locator("#services tbody tr")).to_have_count(5)
    expect(page.locator("#services tbody")).to_contain_text("unknown")
    screenshot(page, "flow-no-engine-desktop")


@pytest.fixture
def demo_worker(reference_gpus, no_engine, celery_worker_factory):
    """A real worker that, like the page, finds no engine; demo recreate steps slow enough to
    watch."""
    celery_worker_factory(env={"DOCKER_HOST": no_engine, "GPUCONFIG_SIMULATED_RUNTIME_STEP": "1.0"})
    celery_app.conf.task_always_eager = False


def test_the_demo_runtime_applies_a_plan_and_the_services_panel_follows_it(
    browsing, demo_worker, staff_user
):
    page = browsing.login(*STAFF)
    page.locator("#engine-notice").get_by_role(
        "button", name="Try it with Simulated containers"
    ).click()
    services = page.locator("#services")
    expect(services).to_contain_text("Simulated containers")
    enrichment = services.locator("#svc-ai-enrichment")
    expect(enrichment).to_contain_text("running")
    expect(enrichment).to_contain_text("healthy")
    expect(enrichment).to_contain_text("GPU 1")

    choose_budget_suggestion(page)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#assignments")).to_contain_text("Saved as version")
    page.get_by_role("button", name="Apply & Restart Services").click()
    confirm = page.locator("#apply-confirm")
    expect(confirm).to_contain_text("ai-enrichment: VRAM budget 6.8 GB → 3.5 GB")
    confirm.get_by_role("button", name="Restart 1 service").click()

    # While it runs, the panel shows the restart step of the service being recreated.
    expect(enrichment.locator(".badge-busy")).to_be_visible(timeout=APPLY_TIMEOUT_MS)
    screenshot(page, "flow-demo-apply-running-desktop")
    expect(page.locator("#apply-progress .result")).to_contain_text(
        "Done: all services healthy", timeout=APPLY_TIMEOUT_MS
    )
    expect(enrichment).to_contain_text("healthy")
    expect(enrichment.locator("td[data-label='Last apply']")).to_have_text("Healthy")
    screenshot(page, "flow-demo-apply-done-desktop")
    phone = browsing.login(*STAFF, viewport=PHONE)
    screenshot(phone, "flow-demo-apply-done-phone")

    live = {s["name"]: s for s in api("/gpu-config/services")["services"]}
    assert live["ai-enrichment"]["runtime"] == "simulated"
    assert live["ai-enrichment"]["health"] == "healthy"
    assert live["ai-enrichment"]["gpu_index"] == 1
    assert live["ai-enrichment"]["last_apply"] == "healthy"
