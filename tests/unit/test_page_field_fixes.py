"""The GPU page as a new user met it: a status strip that went stale, a rollback said twice, an
old "Saved as version N" banner, a quick fix that undid Isolation-First, a red "no GPU" for a
service the compose tool never checked, and `gpuconfig check` passing what the page failed."""

from __future__ import annotations

import re

import pytest

from applies.live import live_refresh
from applies.models import ApplyRun
from ops.health import check_compose_tool

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
NO_ENGINE = "unix:///nonexistent/gpuconfig-test.sock"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def no_engine(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.delenv("CONTAINER_HOST", raising=False)


def strip_live(body: str) -> str:
    match = re.search(r'<span id="strip-live"[^>]*>.*?</span>', body, re.S)
    assert match, "no live status chips in the answer"
    return match[0]


def test_a_services_poll_brings_the_strip_s_last_apply(staff, reference_inventory, no_engine):
    page = staff.get("/settings/gpu/").content.decode()
    assert "Never applied" in strip_live(page)
    ApplyRun.objects.create(status=ApplyRun.Status.SUCCEEDED, services=[], actor="staff")

    body = staff.get("/settings/gpu/services/?poll=1", **HTMX).content.decode()

    chips = strip_live(body)
    assert 'hx-swap-oob="true"' in chips
    assert "Last apply succeeded" in chips and "Never applied" not in chips


def test_the_apply_progress_answer_brings_the_strip_too(staff, reference_inventory):
    ApplyRun.objects.create(status=ApplyRun.Status.FAILED, services=[], actor="staff")
    body = staff.get("/settings/gpu/apply/progress/", **HTMX).content.decode()
    assert "Last apply failed" in strip_live(body)


def test_switching_the_demo_on_clears_no_container_engine(
    staff, reference_inventory, no_engine, settings
):
    settings.GPUCONFIG_SIMULATED_RUNTIME_STEP = 0
    live_refresh()
    assert "No container engine" in strip_live(staff.get("/settings/gpu/").content.decode())

    body = staff.post("/settings/gpu/demo-runtime/", {"on": "1"}, **HTMX).content.decode()

    assert "No container engine" not in strip_live(body)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("rolled back to the previous container: out of memory on GPU 1", "out of memory on GPU 1"),
        ("not healthy within 30s. The previous ai-clip was restored.", "not healthy within 30s."),
    ],
    ids=["demo-runtime", "engine"],
)
def test_a_rolled_back_service_is_said_once(staff, reference_inventory, message, reason):
    ApplyRun.objects.create(
        status=ApplyRun.Status.PARTIAL,
        services=["ai-clip"],
        results={"ai-clip": {"outcome": "rolled_back", "message": message}},
    )
    body = staff.get("/settings/gpu/apply/progress/", **HTMX).content.decode()
    [line] = re.findall(r"<li><strong>ai-clip</strong>.*?</li>", body, re.S)
    assert line == (
        "<li><strong>ai-clip</strong> was rolled back to its previous container: "
        f'<span class="message-cell">{reason}</span></li>'
    )


def test_an_edit_after_a_save_takes_the_saved_banner_away(staff, reference_inventory):
    data = {"strategy": "manual", "budget-ai-enrichment": "3.5"}
    for name in ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip"):
        data[f"gpu-{name}"] = "0"
    data["gpu-ai-enrichment"] = "1"
    saved = staff.post("/settings/gpu/save/", data, **HTMX).content.decode()
    assert re.search(r'<div id="save-notice"><p [^>]*>Saved as version \d+', saved)

    data["budget-ai-enrichment"] = "3.4"
    edited = staff.post("/settings/gpu/check/", data, **HTMX).content.decode()

    assert '<div id="save-notice" hx-swap-oob="true"></div>' in edited


def test_the_isolation_first_fixes_keep_the_isolated_gpu_to_itself(staff, reference_inventory):
    """Isolation-First gives ai-llm GPU 0 alone; the 4 GB GPU is then over capacity. No fix
    offered may move a service onto GPU 0."""
    data = {"strategy": "isolation_first", "use": "isolation_first"}
    body = staff.post("/settings/gpu/check/", data, **HTMX).content.decode()
    assert "would move" in body
    fixes = re.findall(r'name="move" value="([^"]+)"', body)
    assert not [f for f in fixes if f.endswith("=0")], fixes


BASE_WITHOUT_IMAGE = """\
services:
  ai-llm:
    environment:
      VRAM_BUDGET_GB: "20"
"""


@pytest.fixture
def broken_base(settings, tmp_path):
    """A base file the compose tool refuses (ai-llm has neither an image nor a build)."""
    base = tmp_path / "compose.yml"
    base.write_text(BASE_WITHOUT_IMAGE)
    settings.GPUCONFIG_COMPOSE_FILE = str(base)
    return base


def test_a_service_the_tool_did_not_check_gets_no_red_badge(
    staff, reference_inventory, broken_base
):
    body = staff.get("/settings/gpu/compose/", **HTMX).content.decode()
    rows = re.findall(r'<tr class="compose-bad">.*?</tr>', body, re.S)
    assert rows, body
    for row in rows:
        assert "status-failed" not in row, row
        assert "not checked" in row


def test_gpuconfig_check_fails_the_compose_line_the_page_fails(
    staff, reference_inventory, broken_base
):
    from assignments.selectors import compose_report

    report = compose_report()
    assert report["ok"] is False
    check = check_compose_tool()
    assert check.ok is False, check.detail
    assert report["error"] in check.detail


def test_the_api_docs_send_a_signed_out_browser_to_log_in(client):
    response = client.get("/api/docs/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/api/docs/"
    # A client that does not ask for a page still gets the API's refusal.
    assert client.get("/api/docs/").status_code == 401


def test_the_api_docs_open_once_signed_in(staff):
    response = staff.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def test_the_page_shows_no_template_comment(staff, reference_inventory):
    body = staff.get("/settings/gpu/").content.decode()
    assert "{#" not in body and "#}" not in body
