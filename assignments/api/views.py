"""The assignments API: thin views over the services and selectors."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from assignments import planner
from assignments.api import serializers as s
from assignments.compose.tools import AUTO, KINDS, UnknownTool
from assignments.selectors import (
    UnknownNeeds,
    apply_status,
    compose_report,
    config_current,
    config_preview,
    config_read_cached,
    lint_report,
    needs_mode,
    plan_details,
    service_list,
)
from assignments.services import apply_start, config_save
from gpuconfig_site.api import bad_request
from gpuconfig_site.errors import echo

ALREADY_APPLIED = "Every service already runs with its assignment."
NEEDS_PARAMETER = OpenApiParameter(
    "needs",
    str,
    required=False,
    enum=["measured", "catalog"],
    description="Plan with the measured VRAM of each service where enough was recorded "
    "(measured, the default) or with the catalog's estimates only (catalog).",
)


class GpuConfigView(APIView):
    """The saved strategy and assignments; PUT validates everything, then saves and writes the
    generated files. A refused PUT changes nothing."""

    @extend_schema(
        parameters=[NEEDS_PARAMETER],
        responses={200: s.GpuConfigSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_retrieve",
    )
    def get(self, request):
        try:
            needs = needs_mode(request.query_params.get("needs"))
        except UnknownNeeds as exc:
            return bad_request(str(exc))
        if needs is None:  # the default read, kept in the cache while nothing changed
            return Response(s.GpuConfigSerializer(config_read_cached(config_current)).data)
        return Response(s.GpuConfigSerializer(config_current(needs=needs)).data)

    @extend_schema(
        request=s.GpuConfigUpdateSerializer,
        responses={200: s.SaveResultSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_update",
    )
    def put(self, request):
        body = request.data
        if not isinstance(body, dict):
            return bad_request(
                'The body must be a JSON object like {"strategy": ..., "assignments": [...]}.'
            )
        unknown = set(body) - {"strategy", "assignments"}
        if unknown:
            return bad_request(f"Unknown field(s): {echo(', '.join(sorted(unknown)))}.")
        if not body:
            return bad_request("Nothing to save: give a strategy, assignments, or both.")
        result = config_save(
            strategy=body.get("strategy"), assignments=body.get("assignments"), user=request.user
        )
        current = config_current()
        return Response(
            s.SaveResultSerializer(
                {
                    "success": True,
                    "version": result.version.pk if result.version else None,
                    "changed": result.changed,
                    "notices": result.notices,
                    **current,
                }
            ).data
        )


class PreviewView(APIView):
    """What a strategy would assign with the current GPUs, without saving anything."""

    @extend_schema(
        parameters=[
            OpenApiParameter("strategy", str, required=True, enum=planner.strategy_names()),
            NEEDS_PARAMETER,
        ],
        responses={200: s.PreviewSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_preview",
    )
    def get(self, request):
        strategy = request.query_params.get("strategy")
        if not strategy:
            return bad_request(f"Give ?strategy= one of: {', '.join(planner.strategy_names())}.")
        try:
            needs = needs_mode(request.query_params.get("needs"))
            plan, data = config_preview(strategy=strategy, needs=needs)
        except (planner.UnknownStrategy, UnknownNeeds) as exc:
            return bad_request(str(exc))
        return Response(
            {
                "strategy": plan.strategy,
                "proposed_assignments": [
                    {
                        "service": p.service,
                        "gpu_index": p.gpu_index,
                        "vram_budget_override": p.budget_gb,
                    }
                    for p in plan.placements
                ],
                "warnings": plan.warnings,
                "warning_details": plan_details(plan, data),
                "needs": data.needs,
            }
        )


class ApplyView(APIView):
    """Apply the saved configuration: recreate the containers whose GPU or budget changed.

    A refusal (another apply runs, the engine cannot be reached) is an ``ApplicationError``,
    answered by the API's exception handler with its status (409, 502, 503)."""

    @extend_schema(
        request=None,
        responses={
            202: s.ApplySerializer,
            409: OpenApiTypes.OBJECT,
            502: OpenApiTypes.OBJECT,
            503: OpenApiTypes.OBJECT,
        },
        operation_id="gpu_config_apply",
    )
    def post(self, request):
        run, pending = apply_start(user=request.user)
        # What is applied is the saved configuration: its warnings (over capacity, ...) stand.
        saved = config_current()
        return Response(
            {
                "success": True,
                "operation_id": run.operation_id,
                "restarted_services": pending,
                "restarted": [],
                "failed": [],
                "warnings": saved["warnings"] + ([] if pending else [ALREADY_APPLIED]),
                "warning_details": saved["warning_details"]
                + (
                    []
                    if pending
                    else [
                        {
                            "code": "nothing_to_restart",
                            "severity": "info",
                            "service": None,
                            "gpu_index": None,
                            "needed_mb": None,
                            "available_mb": None,
                            "suggested_budget_gb": None,
                            "message": ALREADY_APPLIED,
                        }
                    ]
                ),
                "service_statuses": [
                    {"service": name, "status": "pending", "message": "Waiting to restart"}
                    for name in pending
                ],
            },
            status=status.HTTP_202_ACCEPTED,
        )


def _status_stored() -> dict:
    """The latest apply's status with the container state the worker keeps: a request never
    waits on the engine (any signed-in user could keep it busy); a stale copy is refreshed by
    the worker, not here. Unlike the page, the API does not answer "unknown" while Redis is
    away: the read raises, and the answer is a 503 naming Redis."""
    from assignments.live import live_stored

    return apply_status(live=False, snapshot=live_stored() or {})


class StatusView(APIView):
    """The latest apply's per-service progress with each service's container state, as the
    worker last read it from the engine (at most a few seconds old)."""

    @extend_schema(responses=s.StatusSerializer, operation_id="gpu_config_status")
    def get(self, request):
        data = _status_stored()
        run = data.pop("run")
        data["operation_id"] = run.operation_id if run else None
        data["run_status"] = run.status if run else None
        data["error"] = run.error if run else ""
        # Built as the schema's StatusSerializer documents it; not run through it per request
        # (a serializer costs more than the reads behind this answer).
        return Response(data)


class ComposeView(APIView):
    """What each managed service really gets from the base compose file(s) plus the generated
    files, checked by the compose tool's own ``config`` (or the merge model when none is
    installed), with the commands to run."""

    @extend_schema(
        parameters=[OpenApiParameter("tool", str, required=False, enum=[AUTO, *KINDS])],
        responses={200: s.ComposeCheckSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_compose",
    )
    def get(self, request):
        tool = request.query_params.get("tool")
        if tool is not None and tool not in (AUTO, *KINDS):
            # Also an empty ?tool=: the schema's enum is the whole truth.
            return bad_request(
                f"Unknown compose tool {echo(tool)}; expected one of: {', '.join((AUTO, *KINDS))}."
            )
        try:
            report = compose_report(tool=tool)
        except UnknownTool as exc:
            return bad_request(str(exc))
        return Response(s.ComposeCheckSerializer(report).data)


class LintView(APIView):
    """The lint of the user's stack: what keeps an assignment from taking effect or wastes a
    GPU, each finding with its fix."""

    @extend_schema(responses={200: s.LintSerializer}, operation_id="gpu_config_lint")
    def get(self, request):
        return Response(s.LintSerializer(lint_report()).data)


class ServicesView(APIView):
    """Per-service view: container status, health, the GPU it runs on and the saved one, last
    restart status; from the state the worker keeps (no engine call)."""

    @extend_schema(responses=s.ServicesSerializer, operation_id="gpu_config_services")
    def get(self, request):
        data = _status_stored()
        return Response({"services": data["services"]})


class AiServicesView(APIView):
    """The service catalog with VRAM estimates."""

    @extend_schema(responses=s.AiServiceListSerializer, operation_id="ai_services_list")
    def get(self, request):
        return Response({"services": s.AiServiceSerializer(service_list(), many=True).data})
