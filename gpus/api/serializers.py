from rest_framework import serializers

from gpus.models import Gpu, GpuSample


class GpuSerializer(serializers.ModelSerializer):
    """A GPU in the field names the Home Security Intelligence client reads."""

    compute_capability = serializers.CharField(allow_null=True, read_only=True)
    last_seen = serializers.DateTimeField(allow_null=True, read_only=True)

    class Meta:
        model = Gpu
        fields = [
            "index",
            "name",
            "uuid",
            "vram_total_mb",
            "vram_used_mb",
            "compute_capability",
            "utilization_percent",
            "temperature_c",
            "power_w",
            "available",
            "pci_bus_id",
            "processes_used_mb",
            "last_seen",
        ]
        read_only_fields = fields


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
