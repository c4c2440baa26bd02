"""Front room: the fleet overview (``/settings/fleet/``), one row per registered host with its
state, GPUs, VRAM in use, problems and last apply; each opens that host's GPU Configuration
page (``?host=<name>``). Reads only (``front.panels.fleet``)."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.http import require_GET

from front.panels import fleet
from front.views import page_login_required

TEMPLATE = "settings/fleet.html"


@page_login_required
@require_GET
def fleet_overview(request):
    """Every registered host at a glance."""
    rows = fleet.fleet_rows()
    counts = {
        "online": sum(r.online for r in rows),
        "offline": sum(not r.online for r in rows),
        "problems": sum(1 for r in rows if r.problems.total),
    }
    return render(request, TEMPLATE, {"hosts": rows, "counts": counts})
