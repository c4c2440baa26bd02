"""Shapes of the GPU inventory API, documented in the OpenAPI schema: what each endpoint
answers and (``*InputSerializer``) what it takes."""

from rest_framework import serializers

from gpuconfig_site.api import InputSerializer, bounded_integer
from gpus.models import GpuSample

HISTORY_LIMIT_DEFAULT = 100
HISTORY_LIMIT_MAX = 1000
OFFSET_MAX = 10**9


class GpuSampleHistoryInputSerializer(InputSerializer):
    """Query of GET /gpu/history: one page of samples, newest first."""

    limit = bounded_integer("limit", default=HISTORY_LIMIT_DEFAULT, low=1, high=HISTORY_LIMIT_MAX)
    offset = bounded_integer("offset", default=0, low=0, high=OFFSET_MAX)


class GpuProcessSerializer(serializers.Serializer):
    """A process holding memory on the GPU at the last scan. ``service`` is the managed
    service it belongs to and ``container`` its container's name (or short id), both null for
    a process outside any container gpuconfig knows."""

    pid = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True, help_text="Empty when the PID is not visible.")
    used_mb = serializers.IntegerField(read_only=True)
    service = serializers.CharField(allow_null=True, read_only=True)
    container = serializers.CharField(allow_null=True, read_only=True)
    kind = serializers.ChoiceField(choices=["compute", "graphics"], read_only=True)

    def to_representation(self, instance):
        return {
            "pid": instance.pid,
            "name": instance.name,
            "used_mb": instance.used_mb,
            "service": instance.service or None,
            "container": instance.container_name or instance.container_id[:12] or None,
            "kind": instance.kind,
        }


class GpuSerializer(serializers.Serializer):
    """A GPU in the field names the Home Security Intelligence client reads.

    Fields are declared rather than derived from the model: ``GET /gpus`` is the hottest read,
    and a ModelSerializer rebuilds its fields from the model on every request.
    """

    index = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    uuid = serializers.CharField(read_only=True)
    vram_total_mb = serializers.IntegerField(allow_null=True, read_only=True)
    vram_used_mb = serializers.IntegerField(allow_null=True, read_only=True)
    compute_capability = serializers.CharField(allow_null=True, read_only=True)
    utilization_percent = serializers.IntegerField(allow_null=True, read_only=True)
    temperature_c = serializers.IntegerField(allow_null=True, read_only=True)
    power_w = serializers.FloatField(allow_null=True, read_only=True)
    available = serializers.BooleanField(read_only=True)
    pci_bus_id = serializers.CharField(read_only=True)
    processes_used_mb = serializers.IntegerField(allow_null=True, read_only=True)
    last_seen = serializers.DateTimeField(allow_null=True, read_only=True)
    processes = GpuProcessSerializer(source="processes.all", many=True, read_only=True)


class GpuListSerializer(serializers.Serializer):
    gpus = GpuSerializer(many=True)
    backend = serializers.CharField(
        allow_null=True, help_text="Detection backend: nvml, nvidia-smi, simulated, ..."
    )
    simulated = serializers.BooleanField(
        help_text="True when the GPUs come from a simulated inventory, not this machine."
    )
    detail = serializers.CharField(required=False, help_text="Set when no GPU is detected.")
    troubleshooting = serializers.ListField(child=serializers.CharField(), required=False)


class DetectSerializer(GpuListSerializer):
    notes = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField(allow_null=True)
    fresh = serializers.BooleanField(
        help_text="False when the scan did not finish within the wait."
    )


class SampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = GpuSample
        fields = ["taken_at", "utilization_percent", "vram_used_mb"]


class GpuHistorySerializer(serializers.Serializer):
    index = serializers.IntegerField()
    uuid = serializers.CharField()
    name = serializers.CharField()
    vram_total_mb = serializers.IntegerField(allow_null=True)
    samples = SampleSerializer(many=True)


class GpuHistoryListSerializer(serializers.Serializer):
    gpus = GpuHistorySerializer(many=True)


class GpuHistoryItemSerializer(serializers.Serializer):
    """One recorded sample of one GPU, in the history client's field names."""

    recorded_at = serializers.DateTimeField(source="taken_at")
    gpu_index = serializers.IntegerField(source="gpu.index")
    gpu_uuid = serializers.CharField(source="gpu.uuid")
    gpu_name = serializers.CharField(source="gpu.name")
    gpu_utilization = serializers.IntegerField(source="utilization_percent", allow_null=True)
    memory_used = serializers.IntegerField(source="vram_used_mb", allow_null=True, help_text="MB")
    memory_total = serializers.IntegerField(
        source="gpu.vram_total_mb", allow_null=True, help_text="MB"
    )


class PaginationSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    has_more = serializers.BooleanField()


class GpuHistoryPageSerializer(serializers.Serializer):
    items = GpuHistoryItemSerializer(many=True)
    pagination = PaginationSerializer()
