"""The GPU inventory API. Reads come from the database; only detect runs a scan."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from gpus.api.serializers import (
    DetectSerializer,
    GpuHistoryListSerializer,
    GpuListSerializer,
    GpuSerializer,
)
from gpus.selectors import NO_GPUS_DETAIL, TROUBLESHOOTING, gpu_list, gpu_samples
from gpus.services import gpu_scan_request


def inventory_payload() -> dict:
    gpus = list(gpu_list())
    payload: dict = {"gpus": GpuSerializer(gpus, many=True).data}
    if not any(g.available for g in gpus):
        payload["detail"] = NO_GPUS_DETAIL
        payload["troubleshooting"] = list(TROUBLESHOOTING)
    return payload


class GpuListView(APIView):
    """Detected GPUs with their last reading (present ones first, then lost ones)."""

    @extend_schema(responses=GpuListSerializer, operation_id="gpus_list")
    def get(self, request):
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


class DetectView(APIView):
    """Re-scan GPUs now: runs a scan on a worker, waits a few seconds for it, returns the
    inventory."""

    @extend_schema(request=None, responses=DetectSerializer, operation_id="gpu_config_detect")
    def post(self, request):
        summary, fresh = gpu_scan_request(wait=settings.GPUCONFIG_DETECT_WAIT)
        payload = inventory_payload()
        payload.update(
            backend=summary.get("backend"),
            notes=summary.get("notes", []),
            error=summary.get("error"),
            fresh=fresh,
        )
        if summary.get("error"):
            payload["detail"] = summary["error"]
        return Response(payload)
