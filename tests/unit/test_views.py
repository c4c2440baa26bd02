"""The GPU Configuration page through Django's test client: who may see and change what, the
HTMX partials, and that a refused save changes nothing."""

from __future__ import annotations

import re

import pytest

from applies import progress
from applies.models import ApplyRun
from applies.runtime.base import ContainerRuntime, ContainerState
from applies.services import worker_identity
from assignments import planner
from assignments.models import Assignment, ConfigVersion
from assignments.selectors import config_preview
from tests.conftest import config_files

pytestmark = pytest.mark.django_db

PAGE = "/settings/gpu/"
HTMX = {"HTTP_HX_REQUEST": "true"}
SERVICES = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")


class StubRuntime(ContainerRuntime):
    """An engine that runs every service on GPU 0 with the compose file's budget, written to
    the ``ContainerRuntime`` contract (the real engine is exercised by the e2e apply test)."""

    name = "stub"

    def inspect(self, service: str) -> ContainerState | None:
        return ContainerState(
            id=f"id-{service}",
            name=service,
            status="running",
            health="healthy",
            device_ids=("0",),
            budget_gb=6.8 if service == "ai-enrichment" else None,
        )

    def recover(self, journal: dict[str, dict] | None = None) -> list[str]:
        return []


STUB_RUNTIME = f"{__name__}.StubRuntime"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """The users' passwords are hashed cheaply: these tests are not about hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def viewer(client, plain_user):
    client.force_login(plain_user)
    return client


def form_data(**overrides) -> dict:
    """The page's form as it is first shown for the reference inventory (the vram_based plan),
    with ``overrides`` (field name → value)."""
    data = {"strategy": "vram_based"}
    for service in SERVICES:
        data[f"gpu-{service}"] = "0"
    data["gpu-ai-enrichment"] = "1"
    data["budget-ai-enrichment"] = ""
    data.update(overrides)
    return data


def text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


# --- access --------------------------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_the_login_page(client):
    response = client.get(PAGE)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/settings/gpu/"


def test_anonymous_htmx_request_redirects_the_whole_page_to_login(client):
    response = client.get("/settings/gpu/cards/", **HTMX)
    assert response["HX-Redirect"] == "/accounts/login/?next=%2Fsettings%2Fgpu%2F"


def test_login_page_renders_labelled_fields(client):
    body = text(client.get("/accounts/login/?next=/settings/gpu/"))
    assert '<label for="id_username">Username</label>' in body
    assert '<label for="id_password">Password</label>' in body


def test_settings_redirects_to_the_gpu_tab(staff):
    response = staff.get("/settings/")
    assert response.status_code == 302
    assert response["Location"] == PAGE


# --- the page ------------------------------------------------------------------------------


def test_page_renders_gpu_cards_for_the_reference_inventory(staff, reference_inventory):
    response = staff.get(PAGE)
    assert response.status_code == 200
    body = text(response)
    assert "NVIDIA RTX A5500" in body and "NVIDIA RTX A400" in body
    assert "<strong>19.3</strong> of 24.0 GB in use" in body
    assert "<strong>0.3</strong> of 4.0 GB in use" in body
    assert "<dt>Compute</dt><dd>8.6</dd>" in body
    assert "<dt>Utilisation</dt><dd>35%</dd>" in body
    assert "<dt>Temperature</dt><dd>54 °C</dd>" in body
    assert body.count('class="spark-util"') == 2
    assert 'hx-trigger="every 5s"' in body
    assert "Simulated GPUs." in body
    assert 'hx-headers=\'{"X-CSRFToken": "' in body


def test_page_lists_every_strategy_with_its_description(staff, reference_inventory):
    body = text(staff.get(PAGE))
    for strategy in planner.STRATEGIES.values():
        assert f'<option value="{strategy.name}"' in body
        assert strategy.description in body


def test_page_shows_every_service_with_gpu_choice_budget_and_the_suggestion(
    staff, reference_inventory
):
    body = text(staff.get(PAGE))
    for service in SERVICES:
        assert f'id="id_gpu-{service}"' in body
        assert f'<label class="sr-only" for="id_gpu-{service}">GPU for {service}</label>' in body
    assert 'id="id_budget-ai-enrichment"' in body
    assert "21.7 GB" in body
    # ai-enrichment sits on the 4 GB GPU with its default 6.8 GB budget.
    assert "Use 3.5 GB</button>" in body
    assert 'id="gpu-summary"' in body and 'class="seg seg-4"' in body


def test_a_lost_gpu_is_greyed_with_when_it_was_last_seen_and_its_service_falls_back(
    staff, reference_inventory
):
    from gpus.services import gpu_scan_run

    reference_inventory.write_text(reference_inventory.read_text().split("- index: 1")[0])
    gpu_scan_run()
    body = text(staff.get("/settings/gpu/cards/", **HTMX))
    assert 'class="gpu-card is-unavailable"' in body
    assert "Not available · last seen" in body
    # The service saved on it is shown falling back, and the lost GPU is not offered.
    body = text(staff.get(PAGE))
    assert "is unavailable; falling back to GPU 0" in body
    assert '<option value="1"' not in body


def test_no_gpus_shows_the_troubleshooting_steps_and_rescan(staff, simulated_gpus):
    from gpus.services import gpu_scan_run

    simulated_gpus.write_text("[]\n")
    gpu_scan_run()
    body = text(staff.get(PAGE))
    assert "<h3>No GPUs detected</h3>" in body
    assert "nvidia-smi" in body and "NVIDIA Container Toolkit" in body
    assert "Re-scan GPUs" in body


def test_rescan_runs_a_scan_and_rerenders_the_cards(staff, simulated_gpus):
    from tests.conftest import REFERENCE_GPUS

    simulated_gpus.write_text("[]\n")
    staff.post("/settings/gpu/rescan/", **HTMX)
    simulated_gpus.write_text(REFERENCE_GPUS.read_text())
    response = staff.post("/settings/gpu/rescan/", **HTMX)
    assert response.status_code == 200
    body = text(response)
    assert body.lstrip().startswith('<div id="gpu-cards"')
    assert "NVIDIA RTX A400" in body and "No GPUs detected" not in body
    assert "gpuconfig:inventory-changed" in response["HX-Trigger"]


def test_rescan_without_javascript_redirects_back_to_the_page(staff, reference_inventory):
    response = staff.post("/settings/gpu/rescan/")
    assert response.status_code == 302 and response["Location"] == PAGE


# --- HTMX partials -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "starts"),
    [
        ("/settings/gpu/cards/", '<div id="gpu-cards"'),
        ("/settings/gpu/assignments/", '<section class="panel" id="assignments"'),
        ("/settings/gpu/history/", '<section class="panel" id="history"'),
        ("/settings/gpu/preview/?strategy=balanced", '<div id="preview"'),
    ],
)
def test_partials_render_alone_for_htmx(staff, reference_inventory, url, starts):
    response = staff.get(url, **HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith(starts)
    assert "<html" not in body


def test_a_partial_url_without_htmx_renders_the_whole_page(staff, reference_inventory):
    body = staff.get("/settings/gpu/cards/").content.decode()
    assert body.startswith("<!doctype html>") and 'id="assignments"' in body


def test_preview_shows_proposed_next_to_current_with_changed_rows_and_warnings(
    staff, reference_inventory
):
    body = text(staff.get("/settings/gpu/preview/?strategy=isolation_first", **HTMX))
    assert "Preview: Isolation-First" in body
    # yolo26, florence and clip leave GPU 0 for GPU 1; the others stay.
    assert body.count("→ GPU 1 (RTX A400)</li>") == 3
    assert "3 services would move" in body


def test_preview_of_an_unknown_strategy_says_which_exist(staff, reference_inventory):
    response = staff.get("/settings/gpu/preview/?strategy=fastest", **HTMX)
    assert response.status_code == 422
    assert "Unknown strategy &#x27;fastest&#x27;" in response.content.decode()


def test_check_warns_about_unsaved_choices_without_saving(staff, reference_inventory, settings):
    before = (ConfigVersion.objects.count(), config_files(settings))
    response = staff.post("/settings/gpu/check/", form_data(**{"gpu-ai-llm": "1"}), **HTMX)
    assert response.status_code == 200
    body = text(response)
    assert body.lstrip().startswith('<section id="warnings"')
    assert "Unsaved changes" in body
    assert "GPU 1 (RTX A400) is over capacity" in body
    assert '<div id="note-ai-llm" class="row-note" hx-swap-oob="true">' in body
    assert '<div id="gpu-summary" class="gpu-summary" hx-swap-oob="true">' in body
    assert (ConfigVersion.objects.count(), config_files(settings)) == before


def test_check_clears_the_budget_advice_once_the_suggestion_is_used(staff, reference_inventory):
    body = text(staff.post("/settings/gpu/check/", form_data(), **HTMX))
    assert "Use 3.5 GB</button>" in body
    body = text(
        staff.post("/settings/gpu/check/", form_data(**{"budget-ai-enrichment": "3.5"}), **HTMX)
    )
    assert "Use 3.5 GB" not in body
    assert "RTX A400) is over capacity" not in body


def test_use_loads_a_strategys_plan_into_the_table(staff, reference_inventory):
    response = staff.post("/settings/gpu/check/", form_data(use="isolation_first"), **HTMX)
    body = text(response)
    assert body.lstrip().startswith('<section class="panel" id="assignments"')
    assert "Preview of Isolation-First: 3 services would move (highlighted)" in body
    assert body.count('<tr id="row-') == 5 and body.count('class="is-changed"') == 3
    assert body.count("Unsaved change · was GPU 0</span>") == 3


def test_suggested_budget_fills_the_field_without_javascript(staff, reference_inventory):
    body = text(staff.post("/settings/gpu/check/", form_data(fill="ai-enrichment=3.5")))
    assert body.startswith("<!doctype html>")
    assert re.search(r'name="budget-ai-enrichment" value="3.5"', body)


# --- saving --------------------------------------------------------------------------------


def test_save_writes_the_assignment_and_both_files(
    staff, reference_inventory, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            "/settings/gpu/save/",
            form_data(strategy="manual", **{"budget-ai-enrichment": "3.5"}),
            **HTMX,
        )
    assert response.status_code == 200
    body = text(response)
    assert "Saved as version" in body
    assert (
        '<section class="panel" id="history" aria-labelledby="history-heading" hx-swap-oob="true">'
        in body
    )
    assert Assignment.objects.get(service__name="ai-enrichment").vram_budget_override == 3.5
    # The versions panel lists the new version at once, out of band.
    version = ConfigVersion.objects.order_by("-pk").first()
    versions_oob = 'id="versions" aria-labelledby="versions-heading" hx-swap-oob="true">'
    assert versions_oob in body
    assert f'value="{version.pk}"' in body
    files = config_files(settings)
    assert "VRAM_BUDGET_GB=3.5" in files["docker-compose.gpu-override.yml"]
    assert "3.5" in files["gpu-assignments.yml"]
    assert ConfigVersion.objects.first().actor == "staff"


def test_save_without_javascript_redirects_with_a_message(staff, reference_inventory):
    data = form_data(strategy="manual", **{"budget-ai-enrichment": "3.5"})
    response = staff.post("/settings/gpu/save/", data, follow=True)
    assert response.redirect_chain == [(f"{PAGE}#assignments", 302)]
    assert "Saved as version" in text(response)


def test_saving_the_form_as_shown_records_no_version_and_says_so(staff, reference_inventory):
    versions = ConfigVersion.objects.count()
    response = staff.post("/settings/gpu/save/", form_data(), follow=True)
    assert "Nothing changed" in text(response)
    assert ConfigVersion.objects.count() == versions


def test_save_with_an_invalid_budget_shows_the_error_and_changes_nothing(
    staff, reference_inventory, settings
):
    before = (
        list(Assignment.objects.values_list("service__name", "gpu_index", "vram_budget_override")),
        ConfigVersion.objects.count(),
        config_files(settings),
    )
    response = staff.post(
        "/settings/gpu/save/", form_data(**{"budget-ai-enrichment": "2000"}), **HTMX
    )
    assert response.status_code == 422
    body = text(response)
    assert "Nothing was saved." in body
    assert "ai-enrichment: a VRAM budget of 2000 GB is more than the 1024 GB limit" in body
    assert '<p class="field-error">ai-enrichment: a VRAM budget' in body
    after = (
        list(Assignment.objects.values_list("service__name", "gpu_index", "vram_budget_override")),
        ConfigVersion.objects.count(),
        config_files(settings),
    )
    assert after == before


def test_save_missing_the_per_service_fields_is_refused_as_the_api_refuses_it(
    staff, reference_inventory, settings
):
    """Only the CSRF token and ``strategy=manual``: no service is unassigned, no budget
    cleared; the refusal is the API's own ("gpu_index is required")."""
    Assignment.objects.filter(service__name="ai-enrichment").update(vram_budget_override=3.5)
    before = (
        list(Assignment.objects.values_list("service__name", "gpu_index", "vram_budget_override")),
        ConfigVersion.objects.count(),
        config_files(settings),
    )
    response = staff.post("/settings/gpu/save/", {"strategy": "manual"})
    assert response.status_code == 422
    assert "gpu_index is required" in text(response)
    after = (
        list(Assignment.objects.values_list("service__name", "gpu_index", "vram_budget_override")),
        ConfigVersion.objects.count(),
        config_files(settings),
    )
    assert after == before
    api = staff.put(
        "/api/system/gpu-config",
        {"strategy": "manual", "assignments": [{"service": "ai-llm"}]},
        content_type="application/json",
    )
    assert api.status_code == 400
    assert "gpu_index is required" in api.json()["detail"]


def test_save_with_a_budget_that_is_not_a_number_is_refused_inline(staff, reference_inventory):
    versions = ConfigVersion.objects.count()
    response = staff.post("/settings/gpu/save/", form_data(**{"budget-ai-enrichment": "lots"}))
    assert response.status_code == 422
    assert "Enter a number." in text(response)
    assert ConfigVersion.objects.count() == versions


# --- read-only for non-staff ---------------------------------------------------------------


def test_viewer_sees_the_page_read_only(viewer, reference_inventory):
    body = text(viewer.get(PAGE))
    assert "You are viewing the GPU configuration read-only" in body
    assert re.search(r'<select name="gpu-ai-llm"[^>]* disabled', body)
    assert re.search(r'id="save-button" disabled', body)
    assert "Use 3.5 GB</button>" not in body


def test_viewer_save_is_refused_with_a_clear_message(viewer, reference_inventory, settings):
    before = (ConfigVersion.objects.count(), config_files(settings))
    response = viewer.post(
        "/settings/gpu/save/", form_data(strategy="manual", **{"gpu-ai-llm": "1"}), **HTMX
    )
    assert response.status_code == 403
    assert "Changing the GPU configuration needs a staff account" in text(response)
    assert Assignment.objects.get(service__name="ai-llm").gpu_index == 0
    assert (ConfigVersion.objects.count(), config_files(settings)) == before


def test_viewer_cannot_apply_or_rescan(viewer, reference_inventory):
    response = viewer.post("/settings/gpu/apply/", **HTMX)
    assert response.status_code == 403 and "needs a staff account" in text(response)
    assert not ApplyRun.objects.exists()
    response = viewer.post("/settings/gpu/rescan/", **HTMX)
    assert response.status_code == 403 and "needs a staff account" in text(response)


# --- apply ---------------------------------------------------------------------------------


def test_apply_confirmation_lists_the_services_that_will_restart(
    staff, reference_inventory, settings
):
    settings.GPUCONFIG_CONTAINER_RUNTIME = STUB_RUNTIME
    body = text(staff.get("/settings/gpu/apply/", **HTMX))
    assert "Restart these services?" in body
    assert "<strong>ai-enrichment</strong>: GPU 0 → GPU 1" in body
    assert "Restart 1 service</button>" in body
    assert "ai-llm" not in body


def test_apply_confirmation_says_when_the_engine_is_unreachable(
    staff, reference_inventory, monkeypatch
):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/gpuconfig/docker.sock")
    body = text(staff.get("/settings/gpu/apply/", **HTMX))
    assert "Cannot reach the container engine" in body
    assert "<button" not in body


def test_apply_start_shows_polling_progress(staff, reference_inventory, settings):
    settings.GPUCONFIG_CONTAINER_RUNTIME = STUB_RUNTIME
    response = staff.post("/settings/gpu/apply/", **HTMX)
    assert response.status_code == 200
    body = text(response)
    assert 'hx-trigger="load delay:500ms, every 1s"' in body
    assert '<div id="apply-actions" class="actions" hx-swap-oob="true">' in body
    assert re.search(r"Apply &amp; Restart Services", body)
    run = ApplyRun.objects.get()
    assert run.services == ["ai-enrichment"] and run.actor == "staff"


def test_an_apply_done_before_its_answer_shows_the_run_in_the_history_at_once(
    staff, reference_inventory, settings, monkeypatch
):
    """Nothing to wait for (a quick engine): the answer stops polling, so it carries the
    history with the new run out of band, or the panel would say "0 apply runs"."""
    from front import views

    def done_at_once(run_id: int) -> None:  # the worker took it and finished before the answer
        run = ApplyRun.objects.get(pk=run_id)
        assert run.claim(worker="w@test") and run.finish(ApplyRun.Status.SUCCEEDED)

    settings.GPUCONFIG_CONTAINER_RUNTIME = STUB_RUNTIME
    monkeypatch.setattr(views, "apply_config_enqueue", done_at_once)
    body = text(staff.post("/settings/gpu/apply/", **HTMX))
    assert ApplyRun.objects.get().status == ApplyRun.Status.SUCCEEDED
    assert "every 1s" not in body
    assert (
        '<section class="panel" id="history" aria-labelledby="history-heading" hx-swap-oob="true">'
        in body
    )
    assert "1 apply run</span>" in body


def test_apply_while_another_runs_is_refused(staff, reference_inventory, settings):
    settings.GPUCONFIG_CONTAINER_RUNTIME = STUB_RUNTIME
    ApplyRun.objects.create(status=ApplyRun.Status.RUNNING, worker=worker_identity())
    response = staff.post("/settings/gpu/apply/", **HTMX)
    assert response.status_code == 409
    assert "An apply is already running" in text(response)


def test_apply_with_the_engine_unreachable_says_so(staff, reference_inventory, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/gpuconfig/docker.sock")
    response = staff.post("/settings/gpu/apply/", **HTMX)
    assert response.status_code == 503
    assert "Cannot reach the container engine, so nothing was restarted" in text(response)


def test_progress_of_a_running_apply_keeps_polling(staff, reference_inventory):
    run = ApplyRun.objects.create(
        status=ApplyRun.Status.RUNNING, services=["ai-enrichment"], actor="staff"
    )
    progress.progress_init(str(run.operation_id), ["ai-enrichment"])
    progress.progress_update(
        str(run.operation_id), "ai-enrichment", "waiting_health", "waiting for healthy"
    )
    response = staff.get("/settings/gpu/apply/progress/", **HTMX)
    assert response.status_code == 200
    body = text(response)
    assert 'hx-trigger="load delay:500ms, every 1s"' in body
    assert "Waiting for health" in body and "waiting for healthy" in body


def test_progress_of_a_run_whose_worker_stopped_says_so(staff, reference_inventory, settings):
    """The worker died mid-apply (its heartbeat is overdue): the panel says so instead of
    "Applying…", and keeps polling so that it shows the repair once a worker runs."""
    from datetime import timedelta

    from django.utils import timezone

    settings.GPUCONFIG_APPLY_HEARTBEAT_TIMEOUT = 15
    stale = timezone.now() - timedelta(seconds=45)
    run = ApplyRun.objects.create(
        status=ApplyRun.Status.RUNNING,
        services=["ai-enrichment"],
        actor="staff",
        worker="elsewhere|pid:[1]|4242|99",
        started_at=stale,
        heartbeat_at=stale,
    )
    progress.progress_init(str(run.operation_id), ["ai-enrichment"])
    progress.progress_update(str(run.operation_id), "ai-enrichment", "waiting_health", "")

    body = text(staff.get("/settings/gpu/apply/progress/", **HTMX))

    assert "Apply stalled: the worker stopped; repair waits for a worker." in body
    assert "Applying…" not in body
    assert 'hx-trigger="load delay:500ms, every 1s"' in body


def test_finished_progress_returns_286_with_a_healthy_result(staff, reference_inventory):
    run = ApplyRun.objects.create(
        status=ApplyRun.Status.SUCCEEDED,
        services=["ai-enrichment"],
        actor="staff",
        results={"ai-enrichment": {"outcome": "healthy", "message": ""}},
    )
    progress.progress_init(str(run.operation_id), ["ai-enrichment"])
    progress.progress_update(
        str(run.operation_id), "ai-enrichment", "healthy", "healthy after 1.2s"
    )
    response = staff.get("/settings/gpu/apply/progress/", **HTMX)
    assert response.status_code == 286
    body = text(response)
    assert "hx-trigger" not in body.split('<div id="apply-actions"')[0]
    assert "Done: all services healthy. Restarted ai-enrichment." in body
    assert 'id="history" aria-labelledby="history-heading" hx-swap-oob="true"' in body


def test_finished_progress_names_the_service_that_rolled_back_and_why(staff, reference_inventory):
    ApplyRun.objects.create(
        status=ApplyRun.Status.PARTIAL,
        services=["ai-llm", "ai-enrichment"],
        results={
            "ai-llm": {"outcome": "healthy", "message": ""},
            "ai-enrichment": {"outcome": "rolled_back", "message": "not healthy within 30s"},
        },
        error="ai-enrichment: rolled_back — not healthy within 30s",
    )
    response = staff.get("/settings/gpu/apply/progress/", **HTMX)
    assert response.status_code == 286
    body = text(response)
    assert "Some services rolled back." in body
    assert (
        "<strong>ai-enrichment</strong> was rolled back to its previous container: "
        '<span class="message-cell">not healthy within 30s</span>' in body
    )


def test_progress_before_any_apply_stops_polling(staff, reference_inventory):
    response = staff.get("/settings/gpu/apply/progress/", **HTMX)
    assert response.status_code == 286
    assert "No apply has run yet." in text(response)


def test_history_lists_saves_and_apply_runs(staff, reference_inventory):
    plan, _ = config_preview(strategy="balanced")
    shown = {f"gpu-{p.service}": str(p.gpu_index) for p in plan.placements}
    shown["budget-ai-enrichment"] = f"{plan.budget_of('ai-enrichment') or ''}"
    staff.post("/settings/gpu/save/", form_data(strategy="balanced", **shown), **HTMX)
    ApplyRun.objects.create(status=ApplyRun.Status.FAILED, actor="staff", error="engine went away")
    body = text(staff.get("/settings/gpu/history/", **HTMX))
    assert (
        '<td data-label="Strategy">Balanced</td>' in body
        and "First detection: initial plan" in body
    )
    assert "Failed</span>" in body and "engine went away" in body
