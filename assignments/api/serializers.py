"""Response shapes of the assignments API (documented in the OpenAPI schema)."""

from rest_framework import serializers

from assignments.models import AiService


class AssignmentSerializer(serializers.Serializer):
    service = serializers.CharField()
    gpu_index = serializers.IntegerField(allow_null=True, min_value=0)
    vram_budget_override = serializers.FloatField(allow_null=True, required=False, help_text="GB")


class GpuConfigSerializer(serializers.Serializer):
    strategy = serializers.CharField()
    strategies = serializers.ListField(child=serializers.CharField())
    assignments = AssignmentSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    updated_at = serializers.DateTimeField(allow_null=True)


class GpuConfigUpdateSerializer(serializers.Serializer):
    """Request body of PUT /gpu-config; validated in the service, which explains every refusal."""

    strategy = serializers.CharField(required=False)
    assignments = AssignmentSerializer(many=True, required=False)


class SaveResultSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    warnings = serializers.ListField(child=serializers.CharField())
    version = serializers.IntegerField()


class PreviewSerializer(serializers.Serializer):
    strategy = serializers.CharField()
    proposed_assignments = AssignmentSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())


class ServiceStatusSerializer(serializers.Serializer):
    service = serializers.CharField()
    status = serializers.CharField()
    message = serializers.CharField(allow_blank=True)
    elapsed_s = serializers.FloatField(allow_null=True, required=False)


class LiveServiceSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.CharField()
    health = serializers.CharField(allow_null=True)
    gpu_index = serializers.IntegerField(allow_null=True)
    restart_status = serializers.CharField(allow_null=True)
    error = serializers.CharField(required=False)


class ApplySerializer(serializers.Serializer):
    success = serializers.BooleanField()
    operation_id = serializers.UUIDField()
    restarted_services = serializers.ListField(child=serializers.CharField())
    restarted = serializers.ListField(child=serializers.CharField())
    failed = serializers.ListField(child=serializers.CharField())
    warnings = serializers.ListField(child=serializers.CharField())
    service_statuses = ServiceStatusSerializer(many=True)


class StatusSerializer(serializers.Serializer):
    operation_id = serializers.UUIDField(allow_null=True)
    run_status = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    in_progress = serializers.BooleanField()
    services_pending = serializers.ListField(child=serializers.CharField())
    services_completed = serializers.ListField(child=serializers.CharField())
    service_statuses = ServiceStatusSerializer(many=True)
    services = LiveServiceSerializer(many=True)


class ServicesSerializer(serializers.Serializer):
    services = LiveServiceSerializer(many=True)


class AiServiceSerializer(serializers.ModelSerializer):
    vram_required_gb = serializers.FloatField(read_only=True)

    class Meta:
        model = AiService
        fields = [
            "name",
            "display_name",
            "model_name",
            "vram_required_mb",
            "vram_required_gb",
            "description",
            "latency_critical",
            "isolated",
            "budget_adjustable",
            "default_budget_gb",
            "min_budget_gb",
        ]
        read_only_fields = fields


class AiServiceListSerializer(serializers.Serializer):
    services = AiServiceSerializer(many=True)
