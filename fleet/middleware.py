"""The fleet, at the request's edge: which host a request works on, and whether that host's
agent can act now.

``?host=<name>`` (or the ``X-GPUConfig-Host`` header the page's HTMX requests carry) names the
host; an unknown name is a 404 and changes nothing. Without either, the default host answers
(``GPUCONFIG_DEFAULT_HOST``, else this machine's own), with no database read added. Requests
that make a host's agent act (apply, detect, re-scan) answer a 503 naming the host at once when
its agent is not online: nothing is queued for a queue nobody reads.
"""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse

from fleet.selectors import host_for_request
from fleet.services import HostUnreachable, host_acting_check
from gpuconfig_site.errors import http_status
from gpuconfig_site.hosts import default_host_name, host_reset, host_set

HOST_HEADER = "X-GPUConfig-Host"
# The views that make a host's agent do something on its machine.
ACTING_VIEWS = frozenset(
    {
        "api-gpu-detect",
        "api-gpu-config-apply",
        "settings-gpu-rescan",
        "settings-gpu-apply",
    }
)
API_PREFIX = "/api/"


def _refusal(request, status: int, detail: str) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": detail}, status=status)
    return HttpResponse(detail, status=status, content_type="text/plain; charset=utf-8")


class HostMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        name = request.GET.get("host") or request.headers.get(HOST_HEADER) or ""
        request.gpu_host_name = None
        if name:
            host = host_for_request(name)
            if host is None:
                return _refusal(request, 404, f"Unknown host {name[:63]!r}.")
            request.gpu_host_name = host.name
        token = host_set(request.gpu_host_name or default_host_name())
        try:
            return self.get_response(request)
        finally:
            host_reset(token)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if request.method in ("GET", "HEAD", "OPTIONS") or match is None:
            return None
        if match.url_name not in ACTING_VIEWS:
            return None
        try:
            host_acting_check()
        except HostUnreachable as exc:
            return _refusal(request, http_status(exc), exc.message)
        return None
