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
from assignments.moves import preview_move_modes
from assignments.selectors import (
    apply_status,
    compose_report,
    config_current,
    config_preview,
    plan_details,
    service_list,
)
from assignments.services import apply_start, config_save
from gpuconfig_site.api import bad_request

ALREADY_APPLIED = "Every service already runs with its assignment."


class GpuConfigView(APIView):
    """The saved strategy and assignments; PUT validates everything, then saves and writes the
    generated files. A refused PUT changes nothing."""

    @extend_schema(responses=s.GpuConfigSerializer, operation_id="gpu_config_retrieve")
    def get(self, request):
        return Response(s.GpuConfigSerializer(config_current()).data)

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
            return bad_request(f"Unknown field(s): {', '.join(sorted(unknown))}.")
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
                    **current,
                }
            ).data
        )


class PreviewView(APIView):
    """What a strategy would assign with the current GPUs, without saving anything."""

    @extend_schema(
        parameters=[
            OpenApiParameter("strategy", str, required=True, enum=planner.strategy_names())
        ],
        responses={200: s.PreviewSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_preview",
    )
    def get(self, request):
        strategy = request.query_params.get("strategy")
        if not strategy:
            return bad_request(f"Give ?strategy= one of: {', '.join(planner.strategy_names())}.")
        try:
            plan, data = config_preview(strategy=strategy)
        except planner.UnknownStrategy as exc:
            return bad_request(str(exc))
        modes = preview_move_modes(plan, data)  # how each moving service would move
        return Response(
            {
                "strategy": plan.strategy,
                "proposed_assignments": [
                    {
                        "service": p.service,
                        "gpu_index": p.gpu_index,
                        "vram_budget_override": p.budget_gb,
                        **modes.get(p.service, {"move_mode": None, "move_reason": ""}),
                    }
                    for p in plan.placements
                ],
                "warnings": plan.warnings,
                "warning_details": plan_details(plan, data),
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
        return Response(
            {
                "success": True,
                "operation_id": run.operation_id,
                "restarted_services": pending,
                "restarted": [],
                "failed": [],
                "warnings": [] if pending else [ALREADY_APPLIED],
                "warning_details": []
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
                ],
                "service_statuses": [
                    {"service": name, "status": "pending", "message": "Waiting to restart"}
                    for name in pending
                ],
            },
            status=status.HTTP_202_ACCEPTED,
        )


class StatusView(APIView):
    """The latest apply's per-service progress with each service's live container state."""

    @extend_schema(responses=s.StatusSerializer, operation_id="gpu_config_status")
    def get(self, request):
        data = apply_status()
        run = data.pop("run")
        data["operation_id"] = run.operation_id if run else None
        data["run_status"] = run.status if run else None
        data["error"] = run.error if run else ""
        return Response(s.StatusSerializer(data).data)


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
        try:
            report = compose_report(tool=request.query_params.get("tool") or None)
        except UnknownTool as exc:
            return bad_request(str(exc))
        return Response(s.ComposeCheckSerializer(report).data)


class ServicesView(APIView):
    """Live per-service view: container status, health, GPU and last restart status."""

    @extend_schema(responses=s.ServicesSerializer, operation_id="gpu_config_services")
    def get(self, request):
        data = apply_status()
        return Response({"services": data["services"]})


class AiServicesView(APIView):
    """The service catalog with VRAM estimates."""

    @extend_schema(responses=s.AiServiceListSerializer, operation_id="ai_services_list")
    def get(self, request):
        return Response({"services": s.AiServiceSerializer(service_list(), many=True).data})
