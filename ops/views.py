"""Ops room. Operational endpoints outside the API: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from drf_spectacular.views import SpectacularSwaggerSplitView

from gpuconfig_site.auth import KeyInvalid, KeyLockedOut, api_key_identify, lockout_response
from ops.health import readiness_checks
from ops.metrics import metrics_render


def has_operator_access(request: HttpRequest) -> bool:
    """A staff session, or an API key (``GPUCONFIG_API_KEY`` or a named key) in ``X-API-Key``
    or ``Authorization: Bearer`` (what Prometheus sends). A wrong key counts as a failed
    sign-in, as on the API, so these endpoints are no unthrottled key oracle; from a locked-out
    address only a named key is taken, another raises ``KeyLockedOut`` (``api_key_identify``)."""

    user = getattr(request, "user", None)
    if user and user.is_authenticated and user.is_staff:
        return True
    supplied = request.headers.get("X-API-Key")
    auth = request.headers.get("Authorization", "")
    if supplied is None and auth[:7].lower() == "bearer ":
        supplied = auth[7:]
    if supplied is None:
        return False
    try:
        api_key_identify(request, supplied)
    except KeyInvalid:
        return False
    return True


def _address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in settings.GPUCONFIG_METRICS_ALLOW:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Nothing else is checked, no auth."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when every check passes, else 503. Details only for operators."""
    try:
        detailed = has_operator_access(request)
    except KeyLockedOut:
        return lockout_response(request)
    checks = readiness_checks()
    ready = all(c.ok is not False for c in checks)
    body = {
        "status": "ready" if ready else "not ready",
        "checks": {
            c.name: (
                {"status": c.label.lower(), "detail": c.detail}
                if detailed
                else {"status": c.label.lower()}
            )
            for c in checks
        },
    }
    return JsonResponse(body, status=200 if ready else 503)


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, for the API key, a staff session or an allowed address."""
    try:
        operator = has_operator_access(request)
    except KeyLockedOut:
        return lockout_response(request)
    if not (operator or _address_allowed(request.META.get("REMOTE_ADDR", ""))):
        return JsonResponse(
            {"detail": "Metrics need the API key or an address in GPUCONFIG_METRICS_ALLOW."},
            status=403,
        )
    from prometheus_client import CONTENT_TYPE_LATEST

    return HttpResponse(metrics_render(), content_type=CONTENT_TYPE_LATEST)


class ApiDocsView(SpectacularSwaggerSplitView):
    """The API's docs page (Swagger UI). A signed-out browser (one that asks for HTML) is sent
    to log in and back, instead of being answered with the API's JSON refusal; other clients
    still get that 401/403."""

    def handle_exception(self, exc):
        from django.contrib.auth.views import redirect_to_login
        from rest_framework.exceptions import NotAuthenticated

        wants_html = "text/html" in self.request.headers.get("Accept", "")
        if isinstance(exc, NotAuthenticated) and wants_html:
            return redirect_to_login(self.request.get_full_path())
        return super().handle_exception(exc)
