"""The fleet overview and one host's GPU page in a real browser, with one host offline: the
overview lists every host and opens a host's page; an offline host's page says so, shows its
GPUs as stale, keeps its requests on that host and shows the refusal of Re-scan and Apply.
Screenshots at 1366 and 390 px under var/screenshots/ (fleet-*, fleet-host-offline-*)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from fleet.models import Host
from fleet.services import host_register, local_host_ensure
from gpuconfig_site.hosts import host_scope
from gpus.backends.base import GpuReading
from gpus.services import scan_report_ingest
from tests.e2e.pages import DESKTOP, PHONE, STAFF, screenshot

pytestmark = [pytest.mark.e2e]

B_GPUS = [
    GpuReading(index=0, uuid="GPU-b0", name="NVIDIA L4", vram_total_mb=23034, vram_used_mb=9100),
    GpuReading(index=1, uuid="GPU-b1", name="NVIDIA T4", vram_total_mb=15360, vram_used_mb=4200),
]
C_GPUS = [
    GpuReading(
        index=i,
        uuid=f"GPU-c{i}",
        name="NVIDIA A100 80GB PCIe",
        vram_total_mb=81920,
        vram_used_mb=20000 + 1000 * i,
    )
    for i in range(4)
]


def _host(name: str, display_name: str, readings, *, seen_ago: timedelta) -> Host:
    host = host_register(name=name, display_name=display_name)
    Host.objects.filter(pk=host.pk).update(last_heartbeat=timezone.now() - seen_ago)
    with host_scope(name):
        scan_report_ingest(readings=readings, backend="nvml")
    return host


@pytest.fixture
def fleet(reference_gpus):
    """This machine (the reference hardware), the lab box B offline for 40 minutes, and an
    online four-GPU box C."""
    local_host_ensure()
    _host("gpu-b", "Lab box", B_GPUS, seen_ago=timedelta(minutes=40))
    _host("gpu-c", "Render farm 1", C_GPUS, seen_ago=timedelta(seconds=2))


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_the_fleet_page_and_an_offline_hosts_page(browsing, fleet, staff_user):
    pages = {}
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = browsing.login(*STAFF, viewport=viewport)
        page.goto("/settings/fleet/")
        rows = page.locator("#fleet tbody tr")
        expect(rows).to_have_count(3)
        b = page.locator("#host-gpu-b")
        expect(b).to_contain_text("Lab box")
        expect(b).to_contain_text("Offline")
        expect(b).to_contain_text("last seen 40")
        expect(page.locator("#host-gpu-c")).to_contain_text("Online")
        expect(page.locator("#host-gpu-c .gpu-count")).to_contain_text("4")
        expect(page.locator("#host-gpu-c .vram-cell")).to_contain_text("84.0 / 320.0 GB")
        assert no_sideways_scroll(page), name
        screenshot(page, f"fleet-{name}")

        b.get_by_role("link", name="Lab box").click()
        page.wait_for_url(re.compile(r"/settings/gpu/\?host=gpu-b$"))
        banner = page.locator("#host-offline")
        expect(banner).to_contain_text("Lab box is offline.")
        expect(banner).to_contain_text("last seen 40")
        expect(page.locator("#host-select")).to_have_value("gpu-b")
        cards = page.locator("#gpu-cards .gpu-card")
        expect(cards).to_have_count(2)
        expect(page.locator("#gpu-cards .gpu-card.is-stale")).to_have_count(2)
        expect(cards.nth(0)).to_contain_text("NVIDIA L4")
        assert no_sideways_scroll(page), name
        screenshot(page, f"fleet-host-offline-{name}")
        pages[name] = page

    # On the desktop page: the cards' poll stays on B (its header), Re-scan and Apply are
    # refused with the reason, shown as a message while the cards stay.
    page = pages["desktop"]
    page.locator("#gpus").get_by_role("button", name="Re-scan GPUs").click()
    error = page.locator("#page-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("'gpu-b' is offline")
    expect(page.locator("#gpu-cards .gpu-card.is-stale")).to_have_count(2)
    page.get_by_role("button", name="Apply & Restart Services").click()
    confirm = page.locator("#apply-confirm")
    expect(confirm).to_contain_text("'gpu-b' is offline")
    expect(confirm).to_contain_text("last seen")
    screenshot(page, "fleet-host-offline-refused-desktop")

    # The switcher loads another host's page.
    page.locator("#host-select").select_option("gpu-c")
    page.wait_for_url(re.compile(r"/settings/gpu/\?host=gpu-c$"))
    expect(page.locator("#host-offline")).to_have_count(0)
    expect(page.locator("#gpu-cards .gpu-card")).to_have_count(4)
    expect(page.locator("#gpu-cards")).to_contain_text("A100")
