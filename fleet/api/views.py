"""The fleet API: the GPU hosts gpuconfig manages, with their liveness."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from fleet.api.serializers import HostSerializer
from fleet.selectors import host_list


class HostListView(APIView):
    """Every registered GPU host: online while its agent's heartbeats arrive, offline after
    three missed ones, never seen until the first."""

    @extend_schema(responses=HostSerializer(many=True), operation_id="hosts_list")
    def get(self, request):
        return Response(HostSerializer(host_list(), many=True).data)
