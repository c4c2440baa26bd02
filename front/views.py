"""Front room. The settings pages (server-rendered, HTMX).

One template, ``settings/gpu.html``, with named partials. Every view renders the whole page for
a plain request and only its partial for an HTMX request (``_render``), so the page works
without JavaScript and no partial has a view of its own. Writes go through the services
(``assignments.services``, ``applies.services``) and the tasks' enqueue helpers (an apply, a
refresh of the container state, a GPU scan); reads through the selectors and ``front.panels``.
"""

from __future__ import annotations

from functools import wraps
from http import HTTPStatus
from typing import NamedTuple
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from applies.live import demo_runtime_disable, demo_runtime_enable, live_cached
from applies.selectors import apply_run_latest, apply_status
from applies.services import apply_preview, apply_start
from applies.tasks import apply_config_enqueue, live_refresh_request
from assignments import planner
from assignments.selectors import (
    PlanningInput,
    UnknownNeeds,
    needs_mode,
    planning_input_cached,
    version_list,
)
from assignments.services import config_save, config_strategy_recorded
from fleet.services import HostUnreachable, host_acting_check
from front import panels
from front.forms import ConfigForm, budget_field_name, gpu_field_name
from front.page_fragments import config_fragment_key, plan_fragments_get, problem_count_set
from front.panels.fleet import host_switcher
from gpuconfig_site.errors import ApplicationError, http_status
from gpuconfig_site.hosts import host_is_local, host_name
from gpuconfig_site.read_memo import reads_shared
from gpuconfig_site.redis_health import REDIS_DOWN, redis_down_detail
from gpus.selectors import detection_mode
from gpus.tasks import gpu_scan_request

TEMPLATE = "settings/gpu.html"
# How many saved versions the versions panel lists.
VERSIONS_SHOWN = 20
STOP_POLLING = 286
NOT_STAFF = (
    "Changing the GPU configuration needs a staff account. "
    "You can look at everything here, but not save, apply or re-scan."
)
INVENTORY_CHANGED = "gpuconfig:inventory-changed"
APPLY_STARTED = "gpuconfig:apply-started"
DEMO_REAL_GPUS = (
    "Simulated containers go with simulated GPUs only; this machine's GPUs are real. "
    "Start Docker or Podman to apply."
)


class FormRow(NamedTuple):
    """One row of the assignment table: the planner's view and the form's fields."""

    row: panels.Row
    gpu: object
    budget: object | None


# --- helpers ---------------------------------------------------------------------------------


def page_login_required(view):
    """Like ``login_required``; an HTMX request whose session ended is sent to the login page
    as a whole page, not swapped into a fragment."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.htmx:
            query = urlencode({"next": gpu_page_url(request)})
            return HttpResponseClientRedirect(f"{resolve_url(settings.LOGIN_URL)}?{query}")
        return redirect_to_login(request.get_full_path())

    return wrapper


def gpu_page_url(request: HttpRequest, anchor: str = "") -> str:
    """The GPU Configuration page of the host the request is on (``?host=`` when it named
    one), at ``anchor``."""
    url = reverse("settings-gpu")
    host = getattr(request, "gpu_host_name", None)
    if host:
        url = f"{url}?{urlencode({'host': host})}"
    return f"{url}#{anchor}" if anchor else url


def _can_change(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_staff)


def _refusal_status(error: ApplicationError) -> int:
    """The status of a fragment that shows a refusal: the error's own (409, 502, 503), and 422
    rather than 400 for a form the page re-renders with the reason at its field."""
    status = http_status(error)
    return HTTPStatus.UNPROCESSABLE_ENTITY if status == HTTPStatus.BAD_REQUEST else status


def _needs(request: HttpRequest) -> str | None:
    """The "Plan with measured VRAM" switch: ``measured`` when on, ``catalog`` when the form
    carried it off, None (the default: measured where data exists) when it was not sent."""
    params = request.POST if request.method == "POST" else request.GET
    try:
        needs = needs_mode(params.get("needs"))
    except UnknownNeeds:
        needs = None
    if needs is None and params.get("needs_switch"):
        return "catalog"
    return needs


def _planning(request: HttpRequest) -> PlanningInput:
    return planning_input_cached(needs=_needs(request))


def _config_form(
    request: HttpRequest,
    data=None,
    *,
    planning: PlanningInput,
    strategy: str | None = None,
    choices=None,
) -> ConfigForm:
    return ConfigForm(
        data,
        planning=planning,
        strategy=strategy or panels.current_strategy(),
        choices=choices,
        can_change=_can_change(request),
    )


def _config_context(
    request: HttpRequest,
    form: ConfigForm | None = None,
    *,
    planning: PlanningInput | None = None,
    **extra,
) -> dict:
    """The strategy select and the assignment table for ``form`` (saved values without one;
    ``planning``: the planning input when the caller has read it)."""
    saved_strategy = panels.current_strategy()
    if form is None:
        form = _config_form(
            request, planning=planning or _planning(request), strategy=saved_strategy
        )
    planning = form.planning
    table = panels.table_state(form.choices(), data=planning)
    rows = [
        FormRow(
            row,
            form[gpu_field_name(row.service.name)],
            form[budget_field_name(row.service.name)] if row.demand.budget_adjustable else None,
        )
        for row in table.rows
    ]
    problems = panels.problems(table)
    return {
        "form": form,
        "table": table,
        "rows": rows,
        "problems": problems,
        "strip": panels.status_strip(problem_count=len(problems)),
        "strategies": panels.strategy_list(),
        "saved_strategy": saved_strategy,
        "selected_strategy": form.selected_strategy(saved_strategy),
        "needs": planning.needs,
        "measured_available": planning.measured_available,
        **extra,
    }


def _apply_context(*, status: dict | None = None, **given) -> dict:
    """The apply panel: a confirmation, the progress of the latest run, or nothing yet
    (``status``: ``apply_status(snapshot=live_cached())`` when the caller has read it)."""
    apply = {"plan": None, "progress": None, "error": "", "running": False, **given}
    if apply["progress"] is None:
        if status is None and apply_run_latest() is not None:
            status = apply_status(snapshot=live_cached())
        if status is not None and status["run"] is not None:
            apply["progress"] = panels.apply_progress(status)
    if apply["progress"] is not None:
        apply["running"] = apply["progress"].in_progress
    return apply


def _live_strip() -> dict:
    """The status strip's live chips (last apply, engine), sent out of band with a partial."""
    return {"strip": panels.status_strip(problem_count=0), "live_oob": True}


def _render(
    request: HttpRequest, partial: str, context: dict, *, status: int = 200
) -> HttpResponse:
    """The named partial for HTMX, else the whole page with ``context`` filled in around it."""
    context = {"can_change": _can_change(request), **context}
    if request.htmx:
        return render(request, f"{TEMPLATE}#{partial}", context, status=status)
    return _page(request, context, status=status)


def _saved_plan_context(request: HttpRequest, *, planning: PlanningInput, can_change: bool) -> dict:
    """The saved plan for the page. Its rendered parts (problems, assignments) and their problem
    count are kept under the plan's state (``front.page_fragments``): while all are kept, the
    form and the table they were rendered from are not built again."""
    saved_strategy = panels.current_strategy()
    key = config_fragment_key(
        planning=planning, can_change=can_change, saved_strategy=saved_strategy
    )
    kept = plan_fragments_get(key) if key else None
    if kept is not None:
        html, problem_count = kept
        return {
            "config_fragment": key,
            "kept_fragments": html,
            "saved_strategy": saved_strategy,
            "strip": panels.status_strip(problem_count=problem_count),
        }
    context = _config_context(request, planning=planning)
    if key:
        problem_count_set(key, len(context["problems"]))
    return {**context, "config_fragment": key}


@reads_shared("settings-page")  # the parts of the page share one fetch from the cache
def _page(request: HttpRequest, context: dict, *, status: int = 200) -> HttpResponse:
    """The whole page: the sections ``context`` does not bring are read as saved."""
    live_refresh_request()
    page = {"can_change": _can_change(request), **context}
    # Read once for the whole page: the table, the apply panel and the services panel share them.
    planning = _planning(request)
    applying = apply_status(snapshot=live_cached(), data=planning)
    page.setdefault("host", host_switcher(host_name()))
    page.setdefault("inventory", panels.gpu_cards())
    if "form" not in page:
        page.update(_saved_plan_context(request, planning=planning, can_change=page["can_change"]))
    page.setdefault("preview", None)
    page.setdefault("apply", _apply_context(status=applying))
    page.setdefault("history", panels.history())
    page.setdefault("services", panels.services_panel(data=planning, status=applying))
    return render(request, TEMPLATE, page, status=status)


def _services_context() -> dict:
    """The services panel; asks the worker to refresh its stored engine state when stale."""
    live_refresh_request()
    return panels.services_panel()


# --- the page --------------------------------------------------------------------------------


@page_login_required
def settings_index(request):
    return redirect(gpu_page_url(request))


@page_login_required
@require_GET
def gpu_settings(request):
    """The GPU Configuration tab: GPUs, strategy, assignments, apply and history."""
    return _page(request, {})


# --- GPUs ------------------------------------------------------------------------------------


@page_login_required
@require_GET
def gpu_cards(request):
    """The GPU cards alone; the page polls this while it is open (database reads only)."""
    context = {"inventory": panels.gpu_cards(), "host": host_switcher(host_name())}
    return _render(request, "gpu-cards", context)


def _scan_now() -> dict:
    """Run a scan on a worker and wait briefly for it, as the detect API does."""
    summary, fresh = gpu_scan_request(wait=settings.GPUCONFIG_DETECT_WAIT)
    return summary if fresh else {"queued": True}


@page_login_required
@require_POST
def gpu_rescan(request):
    """Re-scan GPUs now and show the fresh cards."""
    if not _can_change(request):
        context = {
            "inventory": panels.gpu_cards(),
            "scan_notice": NOT_STAFF,
            "scan_failed": True,
        }
        return _render(request, "gpu-cards", context, status=403)
    try:
        summary = _scan_now()
    except REDIS_DOWN as exc:
        summary = {"error": redis_down_detail(exc), "status": 503}
    failed = bool(summary.get("error"))
    if summary.get("queued"):
        notice = "The scan is queued; the cards update when it finishes."
    elif failed:
        notice = f"The scan failed: {summary['error']}"
    else:
        notice = "GPUs re-scanned."
    if not request.htmx:
        (messages.error if failed else messages.success)(request, notice)
        return redirect(gpu_page_url(request))
    context = {
        "inventory": panels.gpu_cards(),
        "host": host_switcher(host_name()),
        "scan_notice": notice,
        "scan_failed": failed,
    }
    response = _render(request, "gpu-cards", context, status=summary.get("status", 200))
    if any((summary.get("changes") or {}).values()):
        trigger_client_event(response, INVENTORY_CHANGED)
    return response


# --- strategy, preview, assignments ----------------------------------------------------------


@page_login_required
@require_http_methods(["GET", "POST"])
def config_preview(request):
    """What the chosen strategy would assign, next to the saved assignment (nothing saved)."""
    params = request.POST if request.method == "POST" else request.GET
    strategy = params.get("strategy", "")
    context: dict = {}
    try:
        context["preview"] = panels.preview(strategy, needs=_needs(request))
    except planner.UnknownStrategy as exc:
        context["preview_error"] = str(exc)
    if request.method == "POST" and not request.htmx:
        # Without JavaScript the whole form came along: keep the user's unsaved choices.
        planning = _planning(request)
        context.update(
            _config_context(request, _config_form(request, request.POST, planning=planning))
        )
    status = 422 if "preview_error" in context else 200
    return _render(request, "preview", context, status=status)


@page_login_required
@require_GET
def config_assignments(request):
    """The assignment table as saved (the page reloads it when the GPU inventory changes)."""
    return _render(request, "assignments", _config_context(request))


@page_login_required
@require_POST
def config_check(request):
    """Warnings for the unsaved choices, as they change, before anything is saved.

    ``use=<strategy>`` loads that strategy's plan into the table; ``fill=<service>=<GB>`` puts a
    suggested budget into a service's budget field (the no-JavaScript path of "Use 3.5 GB").
    """
    planning = _planning(request)
    form = _config_form(request, request.POST, planning=planning)
    use = request.POST.get("use")
    if not use and "preview" in request.POST:
        use = request.POST.get("strategy")
    if use:
        try:
            choices = panels.plan_choices(use, keep=form.choices(), needs=_needs(request))
        except planner.UnknownStrategy:
            choices = None
        if choices is not None:
            form = _config_form(request, planning=planning, strategy=use, choices=choices)
            moved = sum(c.gpu_index != form.saved[name].gpu_index for name, c in choices.items())
            notice = (
                f"Preview of {planner.STRATEGIES[use].label}: "
                f"{moved} service{'s' if moved != 1 else ''} would move (highlighted). "
                "Press Save to keep it."
            )
            context = _config_context(request, form, notice=notice)
            return _render(request, "plan-result", context)
    data = request.POST.copy()
    for key, field_name in (("fill", budget_field_name), ("move", gpu_field_name)):
        service, sep, value = request.POST.get(key, "").partition("=")
        if sep:
            data[field_name(service)] = value
            data["strategy"] = "manual"
    if data != request.POST:
        form = _config_form(request, data, planning=planning)
    if request.POST.get("replan"):
        # The "Plan with measured VRAM" switch: the needs column and the warnings change.
        return _render(request, "plan-result", _config_context(request, form))
    if not request.htmx:
        return _page(request, _config_context(request, form))
    return _render(request, "check-result", _config_context(request, form))


@page_login_required
@require_POST
def config_save_view(request):
    """Save the strategy and the table. Refusals are shown inline and nothing is saved."""
    planning = _planning(request)
    form = _config_form(request, request.POST, planning=planning)
    if not _can_change(request):
        form.is_valid()
        form.add_error(None, NOT_STAFF)
        return _render(
            request, "assignments", _config_context(request, form, attempted_save=True), status=403
        )
    if not form.is_valid():
        return _render(
            request, "assignments", _config_context(request, form, attempted_save=True), status=422
        )
    strategy = config_strategy_recorded(
        strategy=form.cleaned_data["strategy"], choices=form.choices()
    )
    try:
        result = config_save(
            strategy=strategy,
            assignments=form.assignments(),
            user=request.user,
        )
    except ApplicationError as exc:
        form.add_application_error(exc)
        context = _config_context(request, form, attempted_save=True)
        return _render(request, "assignments", context, status=_refusal_status(exc))
    notice = (
        f"Saved as version {result.version.pk}, strategy {planner.STRATEGIES[strategy].label}; "
        "the generated files are updated. "
        "Press Apply & Restart Services to restart the services that changed."
        if result.changed
        else "Nothing changed: the saved configuration already is what the form says."
    )
    if result.notices:
        notice = " ".join([notice, *result.notices])
    if not request.htmx:
        messages.success(request, notice)
        return redirect(gpu_page_url(request, "assignments"))
    context = _config_context(request, notice=notice)
    context["history"] = panels.history()
    if result.changed:  # the versions panel lists the new version at once (out of band)
        context.update(versions=list(version_list(limit=VERSIONS_SHOWN)), versions_loaded=True)
    return _render(request, "save-result", context)


# --- apply -----------------------------------------------------------------------------------


@page_login_required
@require_http_methods(["GET", "POST"])
def apply_view(request):
    """GET: which services Apply would restart (asks the engine). POST: start the apply."""
    if request.method == "GET":
        try:
            # An offline host's agent could neither be asked what would restart nor apply it:
            # the same refusal the middleware answers to the POST. (This machine's own host is
            # served by its own worker and never refused.)
            if not host_is_local():
                host_acting_check()
        except HostUnreachable as exc:
            context = {"apply": _apply_context(error=exc.message)}
            return _render(request, "apply-confirm", context, status=http_status(exc))
        return _render(
            request,
            "apply-confirm",
            {"apply": _apply_context(plan=panels.apply_plan(apply_preview()))},
        )
    if not _can_change(request):
        return _render(
            request, "apply-confirm", {"apply": _apply_context(error=NOT_STAFF)}, status=403
        )
    try:
        run, pending = apply_start(user=request.user)
        apply_config_enqueue(run_id=run.pk)
    except ApplicationError as exc:
        context = {"apply": _apply_context(error=exc.message)}
        return _render(request, "apply-confirm", context, status=_refusal_status(exc))
    except REDIS_DOWN as exc:
        error = f"Nothing was restarted: {redis_down_detail(exc)}"
        return _render(request, "apply-confirm", {"apply": _apply_context(error=error)}, status=503)
    if not request.htmx:
        if pending:
            messages.success(request, f"Apply started: restarting {', '.join(pending)}.")
        else:
            messages.success(
                request, "Apply started: every service already runs with its assignment."
            )
        return redirect(gpu_page_url(request, "apply"))
    progress = panels.apply_progress(apply_status(snapshot=live_cached()))
    context = {"apply": _apply_context(progress=progress), **_live_strip()}
    if progress is not None and progress.finished:
        # Done before this answer (nothing to restart, or a quick engine): no polling follows,
        # so the history takes the new run now.
        context["history"] = panels.history()
    response = _render(request, "apply-started", context)
    trigger_client_event(response, APPLY_STARTED)
    return response


@page_login_required
@require_GET
def apply_progress(request):
    """Live progress of the latest apply; once it has finished the answer is 286, which stops
    the page's polling."""
    progress = (
        panels.apply_progress(apply_status(snapshot=live_cached())) if apply_run_latest() else None
    )
    context = {"apply": _apply_context(progress=progress), **_live_strip()}
    finished = progress is None or progress.finished
    if finished:
        context["history"] = panels.history()
    response = _render(request, "progress-result", context)
    if finished and request.htmx:
        response.status_code = STOP_POLLING
    return response


@page_login_required
@require_GET
def history_view(request):
    """The last saved configurations and apply runs."""
    return _render(request, "history", {"history": panels.history()})


# --- services --------------------------------------------------------------------------------


@page_login_required
@require_GET
def services_view(request):
    """The services panel: container status and health from the worker's stored copy (the page
    polls this; it never waits on the engine)."""
    return _render(request, "services", {"services": _services_context(), **_live_strip()})


@page_login_required
@require_POST
def demo_runtime_view(request):
    """Switch the "Simulated containers" demo runtime on or off (simulated GPUs only)."""

    if not _can_change(request):
        return _render(request, "services", {"services": _services_context()}, status=403)
    if request.POST.get("on") == "1":
        if not detection_mode()["simulated"]:
            context = {"services": _services_context(), "demo_error": DEMO_REAL_GPUS}
            return _render(request, "services", context, status=422)
        demo_runtime_enable()
    else:
        demo_runtime_disable()
    if not request.htmx:
        return redirect(gpu_page_url(request, "services"))
    return _render(request, "services", {"services": _services_context(), **_live_strip()})
