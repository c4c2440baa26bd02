"""The fleet overview (``/settings/fleet/``) and the GPU Configuration page of one host among
several: the host switcher, ``?host=`` on every plain link and form and the host header on every
HTMX request, and an offline host's page (banner, stale GPUs, refused Apply and Re-scan).

Host B here is a second registered host whose scans are taken in as its agent's would be
(``scan_report_ingest``); the second scan loses its L4, so one service falls back to the T4 and
over-commits it."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from applies.models import ApplyRun
from fleet.models import Host
from fleet.services import host_register
from gpuconfig_site.hosts import host_scope
from gpus.backends.base import GpuReading
from gpus.models import Gpu
from gpus.services import scan_report_ingest

pytestmark = pytest.mark.django_db

FLEET = "/settings/fleet/"
PAGE = "/settings/gpu/"
HTMX = {"HTTP_HX_REQUEST": "true"}
B_GPUS = [
    GpuReading(index=0, uuid="GPU-b0", name="NVIDIA L4", vram_total_mb=23034, vram_used_mb=500),
    GpuReading(index=1, uuid="GPU-b1", name="NVIDIA T4", vram_total_mb=15360, vram_used_mb=300),
]


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return client


def _register(name: str, *, display_name: str = "", seen_ago: timedelta | None) -> Host:
    host = host_register(name=name, display_name=display_name)
    seen = None if seen_ago is None else timezone.now() - seen_ago
    Host.objects.filter(pk=host.pk).update(last_heartbeat=seen)
    host.refresh_from_db()
    return host


@pytest.fixture
def host_b(reference_inventory):
    """Host B, online, with its L4 lost at the second scan (a fallback onto the T4)."""
    host = _register("gpu-b", display_name="Lab box", seen_ago=timedelta(seconds=1))
    with host_scope("gpu-b"):
        scan_report_ingest(readings=B_GPUS, backend="nvml")
        scan_report_ingest(readings=B_GPUS[1:], backend="nvml")
    return host


def _offline(host: Host, ago: timedelta = timedelta(hours=2)) -> None:
    Host.objects.filter(pk=host.pk).update(last_heartbeat=timezone.now() - ago)


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", response.content.decode()))


def plain(fragment: str) -> str:
    """The text of an HTML fragment, tags left out."""
    return re.sub(r"<[^>]+>", "", fragment)


def _row(body: str, name: str) -> str:
    match = re.search(rf'<tr class="fleet-row[^"]*" id="host-{name}">(.*?)</tr>', body)
    assert match, f"no row for {name}"
    return match.group(1)


# --- the overview ----------------------------------------------------------------------------


def test_the_overview_lists_each_host_with_its_state_gpus_vram_and_problems(
    host_b, staff, settings
):
    _offline(host_b)
    local = settings.GPUCONFIG_HOST_NAME
    body = text(staff.get(FLEET))

    b = _row(body, "gpu-b")
    assert "Lab box" in b and "Offline" in b
    assert re.search(r"last seen 2\s+hours ago", plain(b))
    # One present GPU (the T4) and the lost L4; VRAM of the present one only.
    assert '<td data-label="GPUs" class="num gpu-count">1 <span class="small muted">+ 1 lost' in b
    assert "<strong>0.3</strong> / 15.0 GB" in b
    assert "Over-committed: GPU 1 (T4)" in b
    assert "Falling back: ai-llm" in b
    assert 'href="/settings/gpu/?host=gpu-b"' in b
    assert "never applied" in b

    here = _row(body, local)
    gpus = Gpu.all_hosts.filter(host=local, available=True)
    used = sum(g.vram_used_mb for g in gpus) / 1024
    total = sum(g.vram_total_mb for g in gpus) / 1024
    assert "Online" in here and "last seen" not in here
    assert f'class="num gpu-count">{gpus.count()}</td>' in here
    assert f"<strong>{used:.1f}</strong> / {total:.1f} GB" in here
    assert f'href="/settings/gpu/?host={local}"' in here
    assert "2 hosts" in body and "1 offline or never seen" in body


def test_a_never_seen_host_says_so_and_shows_no_gpus(reference_inventory, staff):
    _register("gpu-new", seen_ago=None)
    row = _row(text(staff.get(FLEET)), "gpu-new")
    assert "Never seen" in row and "agent never seen" in row
    assert '<td data-label="GPUs" class="num gpu-count">0</td>' in row
    assert "no GPUs" in row


def test_the_overview_shows_each_hosts_last_apply(host_b, staff):
    with host_scope("gpu-b"):
        ApplyRun.objects.create(status=ApplyRun.Status.FAILED, finished_at=timezone.now())
        ApplyRun.objects.create(status=ApplyRun.Status.SUCCEEDED, finished_at=timezone.now())
    body = text(staff.get(FLEET))
    assert '<span class="badge status-succeeded">Succeeded</span>' in _row(body, "gpu-b")
    assert "never applied" in _row(body, Host.objects.exclude(name="gpu-b").get().name)


def test_the_overview_reads_a_fixed_number_of_queries_however_many_hosts(host_b, staff, settings):
    def queries() -> int:
        staff.get(FLEET)  # fills each host's problems in the cache
        with CaptureQueriesContext(connection) as captured:
            assert staff.get(FLEET).status_code == 200
        return len(captured)

    two = queries()
    for n in range(6):
        _register(f"gpu-x{n}", seen_ago=timedelta(seconds=1))
        with host_scope(f"gpu-x{n}"):
            scan_report_ingest(readings=B_GPUS, backend="nvml")
    assert queries() == two


def test_a_hosts_problems_follow_its_next_scan(host_b, staff):
    assert "Falling back: ai-llm" in _row(text(staff.get(FLEET)), "gpu-b")
    with host_scope("gpu-b"):
        scan_report_ingest(readings=B_GPUS, backend="nvml")  # the L4 is back
    row = _row(text(staff.get(FLEET)), "gpu-b")
    assert "Falling back" not in row
    assert '<td data-label="GPUs" class="num gpu-count">2</td>' in row


def test_the_overview_needs_a_login(client):
    response = client.get(FLEET)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


# --- one host among several ------------------------------------------------------------------


def test_a_single_box_page_has_no_switcher_no_fleet_tab_and_no_host_header(
    reference_inventory, staff
):
    assert Host.objects.count() == 1
    body = text(staff.get(PAGE))
    assert "host-switcher" not in body and "settings-fleet" not in body and "Fleet</a>" not in body
    assert "X-GPUConfig-Host" not in body and "host-offline" not in body
    assert "?host=" not in body


def test_the_switcher_lists_every_host_and_reloads_the_page_for_the_chosen_one(host_b, staff):
    body = text(staff.get(f"{PAGE}?host=gpu-b"))
    switcher = re.search(
        r'<form class="host-switcher" method="get" action="/settings/gpu/".*?</form>', body
    )
    assert switcher
    options = re.findall(r'<option value="([^"]+)"( selected)?>', switcher.group(0))
    local = Host.objects.exclude(name="gpu-b").get().name
    assert sorted(name for name, _ in options) == sorted([local, "gpu-b"])
    assert dict(options)["gpu-b"] == " selected"
    assert 'name="host"' in switcher.group(0)
    assert '<a class="tab" href="/settings/fleet/">Fleet</a>' in body


def test_every_htmx_request_and_plain_form_of_a_hosts_page_carries_the_host(host_b, staff):
    body = staff.get(f"{PAGE}?host=gpu-b").content.decode()
    headers = re.search(r"<body hx-headers='([^']+)'>", body)
    assert json.loads(headers.group(1))["X-GPUConfig-Host"] == "gpu-b"
    # Every plain form and link to the page's own endpoints names the host (the switcher's
    # form names it with its select).
    rest = re.sub(r'<form class="host-switcher".*?</form>', "", body, flags=re.S)
    targets = re.findall(r'(?:action|href)="(/settings/gpu/[^"]*)"', rest)
    assert targets
    missing = [t for t in targets if "host=gpu-b" not in t]
    assert missing == []
    assert 'action="/settings/gpu/save/?host=gpu-b"' in body
    assert 'hx-get="/settings/gpu/cards/?poll=1&amp;host=gpu-b"' in body


def test_a_plain_post_on_a_hosts_page_comes_back_to_that_hosts_page(host_b, staff):
    response = staff.post("/settings/gpu/rescan/?host=gpu-b")
    # B's scan cannot run here (it is another machine); whatever the outcome, back to B's page.
    assert response.status_code == 302
    assert response["Location"] == "/settings/gpu/?host=gpu-b"


def test_an_unknown_host_is_a_404(reference_inventory, staff):
    assert staff.get(f"{PAGE}?host=nowhere").status_code == 404


# --- an offline host's page ------------------------------------------------------------------


def test_an_offline_hosts_page_says_so_and_shows_its_gpus_as_stale(host_b, staff):
    _offline(host_b, timedelta(minutes=30))
    body = text(staff.get(f"{PAGE}?host=gpu-b"))
    banner = re.search(r'<div class="notice notice-error host-offline".*?</div>', body).group(0)
    assert "Lab box is offline." in banner
    assert re.search(r"last seen 30\s+minutes ago", plain(banner))
    assert "Apply and Re-scan are refused" in banner
    # The present T4 is stale, not lost; the L4 lost at the scan stays lost.
    t4 = Gpu.all_hosts.get(uuid="GPU-b1")
    card = re.search(rf'<li class="gpu-card([^"]*)" id="gpu-card-{t4.pk}">', body)
    assert card.group(1) == " is-stale"
    assert "stale" in body and body.count("Not available") == 1


def test_an_online_hosts_page_has_no_offline_banner(host_b, staff):
    body = text(staff.get(f"{PAGE}?host=gpu-b"))
    assert "host-offline" not in body and "is-stale" not in body
    # B's GPUs are as its agent's scan reported them: real, read through NVML.
    assert "Real GPUs · nvml" in body


def test_the_cards_poll_of_an_offline_host_keeps_them_stale(host_b, staff):
    _offline(host_b)
    body = text(staff.get("/settings/gpu/cards/", HTTP_X_GPUCONFIG_HOST="gpu-b", **HTMX))
    assert "is-stale" in body


def test_rescan_and_apply_on_an_offline_host_are_refused_with_the_reason(host_b, staff):
    _offline(host_b)
    headers = {"HTTP_X_GPUCONFIG_HOST": "gpu-b", **HTMX}
    rescan = staff.post("/settings/gpu/rescan/", **headers)
    assert rescan.status_code == 503
    assert rescan["Content-Type"].startswith("text/plain")
    assert "'gpu-b' is offline" in rescan.content.decode()

    confirm = staff.get("/settings/gpu/apply/", **headers)
    assert confirm.status_code == 503
    body = text(confirm)
    assert "'gpu-b' is offline" in body and "last seen" in body
    assert 'class="notice notice-error"' in body

    started = staff.post("/settings/gpu/apply/", **headers)
    assert started.status_code == 503
    assert not ApplyRun.all_hosts.filter(host="gpu-b").exists()


def test_an_online_hosts_apply_asks_for_its_agent_and_lists_what_it_is_sent(host_b, staff):
    headers = {"HTTP_X_GPUCONFIG_HOST": "gpu-b", **HTMX}
    confirm = staff.get("/settings/gpu/apply/", **headers)
    assert confirm.status_code == 200
    body = text(confirm)
    assert "Apply on gpu-b?" in body and "reached through its agent only" in body
    assert "Cannot reach the container engine" not in body
    # Every enabled service with its saved GPU on B (the L4 is lost: all on the T4, GPU 0 now).
    targets = re.search(r'<ul class="diff-list agent-targets">(.*?)</ul>', body).group(1)
    assert plain(targets).count("GPU ") == 5
    assert 'hx-post="/settings/gpu/apply/?host=gpu-b"' in body


def test_another_hosts_page_is_simulated_only_when_its_own_scans_are(host_b, staff, settings):
    assert settings.GPUCONFIG_GPU_BACKEND == "simulated"  # this machine's, not B's
    body = text(staff.get(f"{PAGE}?host=gpu-b"))
    assert "Simulated GPUs." not in body
    assert "Simulated GPUs." in text(staff.get(PAGE))
