"""The GPU page's layout at 1366 and 390 px, on a fresh box (the guide's layout: two problems,
no container engine) and after an apply with the demo runtime: the apply panel and the compose
panel take the page's full width, and the page heights are printed beside the screenshots."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.pages import DESKTOP, PHONE, STAFF, choose_budget_suggestion, screenshot

pytestmark = [pytest.mark.e2e]

NO_ENGINE = "unix:///nonexistent/gpuconfig-test.sock"


@pytest.fixture
def fresh_box(reference_gpus, monkeypatch, settings):
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    settings.GPUCONFIG_SIMULATED_RUNTIME_STEP = 0
    return reference_gpus


def measure(page) -> dict:
    return page.evaluate(
        """() => {
          const box = (id) => {
            const el = document.getElementById(id);
            if (!el) return null;
            const r = el.getBoundingClientRect();
            return {top: Math.round(r.top + scrollY), width: Math.round(r.width)};
          };
          return {height: document.documentElement.scrollHeight,
                  gpus: box('gpus'), plan: box('assignments'), apply: box('apply'),
                  services: box('services'),
                  compose: box('compose-fold') || box('compose')};
        }"""
    )


def test_the_operation_panels_take_the_full_width(browsing, fresh_box, staff_user, capsys):
    figures = {}
    pages = {}
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = browsing.login(*STAFF, viewport=viewport)
        expect(page.locator("#compose")).not_to_contain_text("Checking the generated files")
        figures[f"default-{name}"] = measure(page)
        screenshot(page, f"layout-default-{name}")
        pages[name] = page

    desktop = pages["desktop"]
    desktop.get_by_role("button", name="Try it with").click()
    expect(desktop.locator(".demo-notice")).to_be_visible()
    choose_budget_suggestion(desktop)
    desktop.get_by_role("button", name="Save", exact=True).click()
    expect(desktop.locator("#assignments")).to_contain_text("Saved as version")
    desktop.get_by_role("button", name="Apply & Restart Services").click()
    desktop.locator("#apply-confirm").get_by_role("button", name="Restart").click()
    expect(desktop.locator("#apply-progress .result")).to_be_visible(timeout=60_000)
    for name, page in pages.items():
        if name != "desktop":
            page.reload()
            expect(page.locator("#apply-progress .result")).to_be_visible()
        figures[f"after-apply-{name}"] = measure(page)
        screenshot(page, f"layout-after-apply-{name}")

    with capsys.disabled():
        for key, f in figures.items():
            print(f"\n{key}: page height {f['height']} px; {f}")

    for key, f in figures.items():
        width = f["gpus"]["width"]
        for panel in ("apply", "services", "compose"):
            assert abs(f[panel]["width"] - width) <= 2, (key, panel, f)
    # The strip followed the apply and the demo runtime without a reload.
    expect(desktop.locator("#strip-live")).to_contain_text("Last apply")
    expect(desktop.locator("#strip-live")).not_to_contain_text("No container engine")
    # The first screen at 1366 x 900 holds the status, the GPUs and the start of the plan.
    assert figures["default-desktop"]["plan"]["top"] < DESKTOP["height"], figures
