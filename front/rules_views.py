"""Front room. The settings page's rules and versions panels: the user's rules (edited in one
form), and the saved versions (compare two, roll back after a confirmation showing the diff,
export, import with a preview). Each panel is filled by its own request; writes go through
``assignments.services.rules`` and ``assignments.services.history`` and reload the page, so the
plan, the problems and the status strip all show the change."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from assignments.selectors import planning_input, rule_entries, version_list
from assignments.services.history import (
    config_import,
    config_import_prepare,
    version_diff,
    version_get,
    version_restore,
    version_restore_prepare,
)
from assignments.services.rules import rules_replace
from front.views import VERSIONS_SHOWN, _refusal_status, gpu_page_url, page_login_required
from gpuconfig_site.errors import ApplicationError
from gpus.models import Gpu

RULES_TEMPLATE = "settings/_rules.html"
VERSIONS_TEMPLATE = "settings/_versions.html"
NOT_STAFF = "Changing rules or the saved configuration needs a staff account."


def _can_change(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_staff)


def _reload(request: HttpRequest):
    """Back to the whole page (an HTMX request is told to load it)."""
    if request.htmx:
        return HttpResponseClientRedirect(request.build_absolute_uri(gpu_page_url(request)))
    return redirect(gpu_page_url(request))


# --- rules ---------------------------------------------------------------------------------


def _rules_context(request: HttpRequest, *, error: str = "", posted=None) -> dict:
    data = planning_input()
    saved = {r["service"]: r for r in rule_entries()}
    rows = []
    for name in data.catalog:
        rule = (posted or {}).get(name) or saved.get(name) or {}
        rows.append(
            {
                "service": name,
                "pin": rule.get("pin_gpu_uuid") or "",
                "exclusive": bool(rule.get("exclusive")),
                "never_with": list(rule.get("never_with") or []),
                "priority": rule.get("priority") or 0,
                "others": [other for other in data.catalog if other != name],
            }
        )
    return {
        "rule_rows": rows,
        "rule_gpus": list(Gpu.objects.order_by("index")),
        "rules_error": error,
        "can_change": _can_change(request),
        "rules_loaded": True,
    }


def _posted_rules(request: HttpRequest) -> list[dict]:
    """The form's rows as the rules service takes them (one per service in the catalog)."""
    rules = []
    for name in planning_input().catalog:
        raw = request.POST.get(f"priority-{name}", "0").strip() or "0"
        try:
            priority: object = int(raw)
        except ValueError:
            priority = raw
        rules.append(
            {
                "service": name,
                "pin_gpu_uuid": request.POST.get(f"pin-{name}") or None,
                "exclusive": request.POST.get(f"exclusive-{name}") == "on",
                "never_with": request.POST.getlist(f"never-{name}"),
                "priority": priority,
            }
        )
    return rules


@page_login_required
@require_http_methods(["GET", "POST"])
def rules_panel(request):
    """GET: the rules form. POST: replace the rules (staff), then reload the page."""
    if request.method == "GET":
        return render(request, RULES_TEMPLATE, _rules_context(request))
    if not _can_change(request):
        return render(request, RULES_TEMPLATE, _rules_context(request, error=NOT_STAFF), status=403)
    rules = _posted_rules(request)
    try:
        rules_replace(rules=rules)
    except ApplicationError as exc:
        posted = {r["service"]: r for r in rules}
        context = _rules_context(request, error=exc.message, posted=posted)
        return render(request, RULES_TEMPLATE, context, status=_refusal_status(exc))
    messages.success(request, "Rules saved. Preview a strategy to see a plan that honours them.")
    return _reload(request)


# --- versions ------------------------------------------------------------------------------


def _versions_context(request: HttpRequest, **extra) -> dict:
    return {
        "versions": list(version_list(limit=VERSIONS_SHOWN)),
        "can_change": _can_change(request),
        "versions_loaded": True,
        **extra,
    }


def _versions_error(request: HttpRequest, exc: ApplicationError, **extra):
    context = _versions_context(request, versions_error=exc.message, **extra)
    return render(request, VERSIONS_TEMPLATE, context, status=_refusal_status(exc))


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@page_login_required
@require_GET
def versions_panel(request):
    """The saved versions; with ``a`` and ``b``, what changed between them."""
    a, b = _int(request.GET.get("a")), _int(request.GET.get("b"))
    if a is None or b is None:
        return render(request, VERSIONS_TEMPLATE, _versions_context(request))
    try:
        diff = version_diff(a=a, b=b)
    except ApplicationError as exc:
        return _versions_error(request, exc)
    return render(request, VERSIONS_TEMPLATE, _versions_context(request, diff=diff))


@page_login_required
@require_http_methods(["GET", "POST"])
def version_restore_view(request, version_id: int):
    """GET: the confirmation, with what a rollback would change. POST: roll back (staff)."""
    if request.method == "GET":
        try:
            version = version_get(version_id=version_id)
            prepared = version_restore_prepare(version)
        except ApplicationError as exc:
            return _versions_error(request, exc)
        context = _versions_context(request, confirm=version, confirm_changes=prepared.changes)
        return render(request, VERSIONS_TEMPLATE, context)
    if not _can_change(request):
        context = _versions_context(request, versions_error=NOT_STAFF)
        return render(request, VERSIONS_TEMPLATE, context, status=403)
    try:
        result, _ = version_restore(version_id=version_id, user=request.user)
    except ApplicationError as exc:
        return _versions_error(request, exc)
    saved = f" as version {result.version.pk}" if result.version else ""
    messages.success(
        request,
        f"Rolled back to version {version_id}{saved}. Apply to restart the services with it.",
    )
    return _reload(request)


@page_login_required
@require_POST
def config_import_view(request):
    """Preview an import (the diff; nothing changes), or, with ``confirm``, import it (staff)."""
    text = request.POST.get("yaml", "")
    if not _can_change(request):
        context = _versions_context(request, versions_error=NOT_STAFF)
        return render(request, VERSIONS_TEMPLATE, context, status=403)
    try:
        if request.POST.get("confirm") != "1":
            prepared = config_import_prepare(text)
            context = _versions_context(request, import_preview=prepared, import_text=text)
            return render(request, VERSIONS_TEMPLATE, context)
        result, _ = config_import(text=text, user=request.user)
    except ApplicationError as exc:
        return _versions_error(request, exc, import_text=text)
    saved = f" as version {result.version.pk}" if result.version else " (nothing changed)"
    messages.success(request, f"Configuration imported{saved}. Apply to restart the services.")
    return _reload(request)
