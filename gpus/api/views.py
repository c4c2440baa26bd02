"""The GPU inventory API. Reads come from the database; only detect runs a scan."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from gpus.api.serializers import (
    HISTORY_LIMIT_DEFAULT,
    HISTORY_LIMIT_MAX,
    OFFSET_MAX,
    DetectSerializer,
    GpuHistoryListSerializer,
    GpuHistoryPageSerializer,
    GpuListSerializer,
    GpuSampleHistoryInputSerializer,
    GpuSerializer,
)
from gpus.selectors import (
    NO_GPUS_DETAIL,
    TROUBLESHOOTING,
    detection_mode,
    gpu_list,
    gpu_sample_page,
    gpu_samples,
    inventory_read_cached,
)
from gpus.tasks import gpu_scan_request


def inventory_payload() -> dict:
    return inventory_read_cached("payload", _inventory_payload)


def inventory_json() -> bytes:
    """``inventory_payload()`` as the JSON renderer writes it, kept rendered: the inventory's
    most read answer costs one cache read and no encoding."""
    return inventory_read_cached(
        "payload.json", lambda: JSONRenderer().render(_inventory_payload())
    )


def _inventory_payload() -> dict:
    gpus = list(gpu_list())
    payload: dict = {"gpus": GpuSerializer(gpus, many=True).data, **detection_mode()}
    if not any(g.available for g in gpus):
        payload["detail"] = NO_GPUS_DETAIL
        payload["troubleshooting"] = list(TROUBLESHOOTING)
    return payload


class GpuListView(APIView):
    """Detected GPUs with their last reading (present ones first, then lost ones)."""

    @extend_schema(responses=GpuListSerializer, operation_id="gpus_list")
    def get(self, request):
        if request.accepted_renderer.format == "json":
            return HttpResponse(inventory_json(), content_type="application/json")
        return Response(inventory_payload())


class GpuHistoryView(APIView):
    """Utilisation and VRAM samples per GPU over the retention window (for charts)."""

    @extend_schema(responses=GpuHistoryListSerializer, operation_id="gpus_history")
    def get(self, request):
        gpus = list(gpu_list())
        samples = gpu_samples(gpu_ids=[g.pk for g in gpus])
        data = [
            {
                "index": g.index,
                "uuid": g.uuid,
                "name": g.name,
                "vram_total_mb": g.vram_total_mb,
                "samples": samples.get(g.pk, []),
            }
            for g in gpus
        ]
        return Response(GpuHistoryListSerializer({"gpus": data}).data)


class GpuSampleHistoryView(APIView):
    """Recorded GPU samples, newest first, paged as ``{items, pagination}`` (the shape of the
    Home Security Intelligence history client)."""

    @extend_schema(
        parameters=[
            # The bounds in the schema are the ones the view enforces (a client generated from
            # the schema then never sends a limit of 0).
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": HISTORY_LIMIT_MAX},
                description=f"1–{HISTORY_LIMIT_MAX}, default {HISTORY_LIMIT_DEFAULT}",
            ),
            OpenApiParameter(
                "offset",
                {"type": "integer", "minimum": 0, "maximum": OFFSET_MAX},
                description="samples to skip, default 0",
            ),
        ],
        responses={200: GpuHistoryPageSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_history_list",
    )
    def get(self, request):
        given = GpuSampleHistoryInputSerializer.validated(request.query_params)
        limit, offset = given["limit"], given["offset"]
        items, total = gpu_sample_page(limit=limit, offset=offset)
        page = {
            "items": items,
            "pagination": {
                "total": total,
                "limit": limit,
                "offset": offset,
                "has_more": offset + len(items) < total,
            },
        }
        return Response(GpuHistoryPageSerializer(page).data)


class DetectView(APIView):
    """Re-scan GPUs now: runs a scan on a worker, waits a few seconds for it, returns the
    inventory."""

    @extend_schema(request=None, responses=DetectSerializer, operation_id="gpu_config_detect")
    def post(self, request):
        summary, fresh = gpu_scan_request(wait=settings.GPUCONFIG_DETECT_WAIT)
        payload = inventory_payload()
        payload.update(
            backend=summary.get("backend") or payload["backend"],
            notes=summary.get("notes", []),
            error=summary.get("error"),
            fresh=fresh,
        )
        if summary.get("error"):
            payload["detail"] = summary["error"]
        return Response(payload)
