"""Applies room, API: the preview of a strategy's plan with how each service would move, start
an apply, its status, the services' live container state (``/api/system/gpu-config/preview``,
``/apply``, ``/status``, ``/services``)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from applies.api import serializers as s
from applies.moves import preview_move_modes
from applies.selectors import apply_status
from applies.services import apply_start
from applies.tasks import apply_config_enqueue, live_stored
from assignments import planner
from assignments.api import serializers as config_serializers
from assignments.api.views import NEEDS_PARAMETER
from assignments.selectors import (
    config_current,
    config_preview,
    plan_details,
)

ALREADY_APPLIED = "Every service already runs with its assignment."


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
        apply_config_enqueue(run_id=run.pk)
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

    return apply_status(snapshot=live_stored() or {})


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


class ServicesView(APIView):
    """Per-service view: container status, health, the GPU it runs on and the saved one, last
    restart status; from the state the worker keeps (no engine call)."""

    @extend_schema(responses=s.ServicesSerializer, operation_id="gpu_config_services")
    def get(self, request):
        data = _status_stored()
        return Response({"services": data["services"]})


class PreviewView(APIView):
    """What a strategy would assign with the current GPUs, without saving anything."""

    @extend_schema(
        parameters=[
            OpenApiParameter("strategy", str, required=True, enum=planner.strategy_names()),
            NEEDS_PARAMETER,
        ],
        responses={200: config_serializers.PreviewSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_preview",
    )
    def get(self, request):
        plan, data = config_preview(
            **config_serializers.PreviewInputSerializer.validated(request.query_params)
        )
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
                "needs": data.needs,
            }
        )
