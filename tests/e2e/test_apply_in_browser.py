"""Apply & Restart Services in a real browser: the live server, a real Celery worker and the
test Docker engine running the five services under compose (all on GPU 0 at the start)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from gpuconfig_site.celery import app as celery_app
from tests.conftest import guide_layout
from tests.e2e.pages import PHONE, STAFF, choose_budget_suggestion, screenshot
from tests.plugins.dockerd import BROKEN_GPU

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.docker]

APPLY_TIMEOUT_MS = 90_000


@pytest.fixture
def stack_with_worker(e2e, simulated_gpus, compose_stack, celery_worker_factory, settings):
    """The reference hardware scanned, gpuconfig pointed at the compose project, and a real
    worker (started after the settings it inherits) taking the apply task from Redis."""
    from gpus.services import gpu_scan_run

    settings.GPUCONFIG_COMPOSE_PROJECT = compose_stack.project
    settings.GPUCONFIG_HEALTH_TIMEOUT = 30
    assert gpu_scan_run()["backend"] == "simulated"
    guide_layout()
    celery_worker_factory()
    # The apply goes to the worker, not inline (conftest makes tasks eager unless a test
    # asks for ``real_worker``; this one starts its worker itself).
    celery_app.conf.task_always_eager = False
    return compose_stack


def test_apply_restarts_the_changed_service_and_ends_healthy(
    browsing, stack_with_worker, staff_user
):
    stack = stack_with_worker
    page = browsing.login(*STAFF)
    choose_budget_suggestion(page)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#assignments")).to_contain_text("Saved as version")
    screenshot(page, "gpu-settings-before-apply-desktop")
    phone = browsing.login(*STAFF, viewport=PHONE)
    screenshot(phone, "gpu-settings-before-apply-phone")

    page.get_by_role("button", name="Apply & Restart Services").click()
    confirm = page.locator("#apply-confirm")
    expect(confirm.get_by_role("heading", name="Restart these services?")).to_be_visible()
    expect(confirm.locator(".diff-list li")).to_have_count(1)
    expect(confirm).to_contain_text("ai-enrichment: GPU 0 → GPU 1; VRAM budget 6.8 GB → 3.5 GB")
    screenshot(page, "gpu-settings-apply-confirm-desktop")

    confirm.get_by_role("button", name="Restart 1 service").click()
    progress = page.locator("#apply-progress")
    expect(progress.get_by_role("row", name=re.compile("ai-enrichment"))).to_be_visible()
    screenshot(page, "gpu-settings-apply-progress-desktop")
    result = progress.locator(".result")
    expect(result).to_contain_text("Done: all services healthy", timeout=APPLY_TIMEOUT_MS)
    expect(result).to_contain_text("Restarted ai-enrichment")
    row = progress.get_by_role("row", name=re.compile("ai-enrichment"))
    expect(row).to_contain_text("Healthy")
    expect(row).to_contain_text("running, healthy")
    expect(page.get_by_role("button", name="Apply & Restart Services")).to_be_enabled()
    expect(page.locator("#history")).to_contain_text("Succeeded")
    screenshot(page, "gpu-settings-after-apply-desktop")
    phone.reload()
    expect(phone.locator("#apply-progress .result")).to_contain_text("Done: all services healthy")
    screenshot(phone, "gpu-settings-after-apply-phone")

    container = stack.container("ai-enrichment")
    requests = container["HostConfig"]["DeviceRequests"]
    assert [r["DeviceIDs"] for r in requests] == [["1"]]
    assert "VRAM_BUDGET_GB=3.5" in container["Config"]["Env"]
    assert "(healthy)" in next(
        c["Status"]
        for c in stack.containers(all_=False)
        if c["Labels"].get("com.docker.compose.service") == "ai-enrichment"
    )


# A GPU whose containers never become healthy (see tests/plugins/dockerd.py).
BROKEN_GPU_ENTRY = f"""
- index: {BROKEN_GPU}
  name: NVIDIA RTX A400 (no driver)
  uuid: GPU-99999999-0000-4000-8000-000000000099
  vram_total_mb: 4094
  vram_used_mb: 0
  compute_capability: "8.6"
"""


def test_apply_rolls_back_a_service_that_does_not_become_healthy(
    browsing, stack_with_worker, simulated_gpus, staff_user
):
    """A container that never becomes healthy is put back as it was, and the page says which
    service and why."""
    from gpus.services import gpu_scan_run

    stack = stack_with_worker
    simulated_gpus.write_text(simulated_gpus.read_text() + BROKEN_GPU_ENTRY)
    gpu_scan_run()
    before = stack.container("ai-clip")["Id"]

    page = browsing.login(*STAFF)
    page.get_by_label("GPU for ai-clip").select_option(BROKEN_GPU)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#assignments")).to_contain_text("Saved as version")
    page.get_by_role("button", name="Apply & Restart Services").click()
    confirm = page.locator("#apply-confirm")
    expect(confirm).to_contain_text(f"ai-clip: GPU 0 → GPU {BROKEN_GPU}")
    restart = confirm.get_by_role("button", name=re.compile(r"^Restart \d+ services?$"))
    restart.click()

    result = page.locator("#apply-progress .result")
    expect(result).to_contain_text("rolled back", timeout=APPLY_TIMEOUT_MS)
    expect(result).to_contain_text("ai-clip was rolled back to its previous container")
    expect(page.locator("#history")).to_contain_text("ai-clip")
    screenshot(page, "gpu-settings-apply-rolled-back-desktop")
    assert stack.container("ai-clip")["Id"] == before
