"""Front room. The settings page's compose panel: what each service really gets under the user's
compose tool, the command to run, and the stack's GPU services the catalog does not know yet."""

from __future__ import annotations

import shlex

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from assignments.files.catalog import OfferInvalid, catalog_offers, catalog_service_add
from assignments.files.tools import KINDS, UnknownTool
from assignments.selectors import catalog_parts, compose_report, lint_report
from front.views import gpu_page_url, page_login_required

TEMPLATE = "settings/_compose.html"


def can_change(request) -> bool:
    return bool(request.user.is_active and request.user.is_staff)


@page_login_required
@require_GET
def compose_panel(request):
    try:
        report = compose_report(tool=request.GET.get("tool") or None)
    except UnknownTool as exc:
        return render(request, TEMPLATE, {"compose_error": str(exc)}, status=400)
    # A service hosting several models shows them beside its name (the need is their sum).
    parts = catalog_parts()
    for row in report["services"]:
        row["parts"] = parts.get(row["service"], [])
    context = {
        "compose": report,
        "up_line": shlex.join(report["up_command"]),
        "config_line": shlex.join(report["config_command"]),
        "tools": KINDS,
        "offers": catalog_offers(),
        "lint": lint_report()["findings"],
        "can_change": can_change(request),
    }
    return render(request, TEMPLATE, context)


@page_login_required
@require_POST
def compose_service_add(request):
    if not can_change(request):
        messages.error(request, "Adding a service to the catalog needs a staff account.")
        return redirect(gpu_page_url(request))
    name = request.POST.get("service", "")
    try:
        catalog_service_add(name=name, vram_gb=request.POST.get("vram_gb"), user=request.user)
    except OfferInvalid as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{name} is in the catalog now; assign it a GPU and save.")
    return redirect(gpu_page_url(request))
