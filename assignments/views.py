"""The settings pages (server-rendered, HTMX)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render


@login_required
def settings_index(request):
    return redirect("settings-gpu")


@login_required
def gpu_settings(request):
    return render(request, "settings/gpu.html", {})
