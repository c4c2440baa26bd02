"""Response shapes of the assignments API (documented in the OpenAPI schema)."""

from rest_framework import serializers

from assignments.models import AiService


class AssignmentSerializer(serializers.Serializer):
    service = serializers.CharField()
    gpu_index = serializers.IntegerField(allow_null=True, min_value=0)
    vram_budget_override = serializers.FloatField(allow_null=True, required=False, help_text="GB")


class WarningDetailSerializer(serializers.Serializer):
    """One warning as data: what a script can act on without parsing the message."""

    code = serializers.CharField(
        help_text="over_capacity, budget_suggestion, budget_too_large, gpu_missing, unassigned, "
        "unplaced, fallback, ..."
    )
    severity = serializers.ChoiceField(choices=["error", "warning", "info"])
    service = serializers.CharField(allow_null=True)
    gpu_index = serializers.IntegerField(allow_null=True)
    needed_mb = serializers.IntegerField(allow_null=True)
    available_mb = serializers.IntegerField(allow_null=True)
    suggested_budget_gb = serializers.FloatField(allow_null=True)
    message = serializers.CharField()


class GpuConfigSerializer(serializers.Serializer):
    strategy = serializers.CharField()
    strategies = serializers.ListField(child=serializers.CharField())
    assignments = AssignmentSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    warning_details = WarningDetailSerializer(many=True)
    updated_at = serializers.DateTimeField(allow_null=True)


class GpuConfigUpdateSerializer(serializers.Serializer):
    """Request body of PUT /gpu-config; validated in the service, which explains every refusal."""

    strategy = serializers.CharField(required=False)
    assignments = AssignmentSerializer(many=True, required=False)


class SaveResultSerializer(serializers.Serializer):
    """The saved configuration as it now stands, after a PUT."""

    success = serializers.BooleanField()
    version = serializers.IntegerField(allow_null=True)
    changed = serializers.BooleanField(help_text="False when the request changed nothing.")
    strategy = serializers.CharField()
    assignments = AssignmentSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    warning_details = WarningDetailSerializer(many=True)
    updated_at = serializers.DateTimeField(allow_null=True)


class MoveFieldsMixin(serializers.Serializer):
    """How a service moves to its new GPU (assignments/moves.py)."""

    move_mode = serializers.ChoiceField(
        choices=["zero_downtime", "restart"],
        allow_null=True,
        required=False,
        help_text="zero_downtime: the new copy goes healthy before the old one stops; "
        "restart: stop-start. null: the service does not move.",
    )
    move_reason = serializers.CharField(allow_blank=True, required=False)


class ProposedAssignmentSerializer(AssignmentSerializer, MoveFieldsMixin):
    pass


class PreviewSerializer(serializers.Serializer):
    strategy = serializers.CharField()
    proposed_assignments = ProposedAssignmentSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    warning_details = WarningDetailSerializer(many=True)


class ServiceStatusSerializer(serializers.Serializer):
    service = serializers.CharField()
    status = serializers.CharField()
    message = serializers.CharField(allow_blank=True)
    elapsed_s = serializers.FloatField(allow_null=True, required=False)
    move_mode = serializers.ChoiceField(
        choices=["zero_downtime", "restart"], allow_null=True, required=False
    )
    move_reason = serializers.CharField(allow_blank=True, required=False)
    downtime_s = serializers.FloatField(
        allow_null=True,
        required=False,
        help_text="Seconds from the old copy no longer answering to the new one answering "
        "(0 for a make-before-break move); null until measured.",
    )


class LiveServiceSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.CharField()
    health = serializers.ChoiceField(
        choices=["healthy", "unhealthy", "starting", "none", "unknown"],
        help_text="none: the container has no healthcheck; unknown: no container, or the "
        "engine did not answer.",
    )
    gpu_index = serializers.IntegerField(allow_null=True)
    restart_status = serializers.CharField(allow_null=True)
    runtime = serializers.CharField(required=False, allow_null=True)
    container = serializers.CharField(required=False, allow_blank=True)
    started_at = serializers.DateTimeField(required=False, allow_null=True)
    last_apply = serializers.CharField(required=False, allow_null=True)
    error = serializers.CharField(required=False)


class ApplySerializer(serializers.Serializer):
    success = serializers.BooleanField()
    operation_id = serializers.UUIDField()
    restarted_services = serializers.ListField(child=serializers.CharField())
    restarted = serializers.ListField(child=serializers.CharField())
    failed = serializers.ListField(child=serializers.CharField())
    warnings = serializers.ListField(child=serializers.CharField())
    warning_details = WarningDetailSerializer(many=True)
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


class ComposeToolSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="docker-compose-v2, podman-compose or docker-compose-v1")
    version = serializers.CharField(allow_null=True, help_text="null: not installed")


class ComposeServiceSerializer(serializers.Serializer):
    service = serializers.CharField()
    assigned = serializers.ListField(child=serializers.CharField())
    effective = serializers.ListField(
        child=serializers.CharField(),
        help_text="Device ids of every NVIDIA request after the merge (count:N or all for a "
        "request without ids).",
    )
    ok = serializers.BooleanField()
    problem = serializers.CharField(allow_blank=True)


class ComposeCheckSerializer(serializers.Serializer):
    tool = ComposeToolSerializer()
    cwd = serializers.CharField()
    up_command = serializers.ListField(child=serializers.CharField())
    config_command = serializers.ListField(child=serializers.CharField())
    ok = serializers.BooleanField()
    checked_by = serializers.ChoiceField(choices=["tool", "model"])
    services = ComposeServiceSerializer(many=True)
    base_files = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField(allow_blank=True)
    patch = serializers.CharField(allow_blank=True, help_text="Fix for the base file (v1 only)")
    unmanaged = serializers.ListField(
        child=serializers.CharField(), help_text="GPU services of the base not in the catalog"
    )
    not_in_stack = serializers.ListField(child=serializers.CharField())
