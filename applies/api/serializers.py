"""Applies room, API serializers: what the apply, status and services endpoints answer (they
build their answers as documented here; the serializers feed the schema)."""

from rest_framework import serializers

from assignments.api.serializers import WarningDetailSerializer


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
    gpu_index = serializers.IntegerField(
        allow_null=True,
        help_text="The GPU the container runs on now (null: no container, no GPU, or unknown).",
    )
    assigned_gpu_index = serializers.IntegerField(
        allow_null=True, help_text="The GPU saved for the service (what Apply makes it run on)."
    )
    pending_apply = serializers.BooleanField(
        help_text="True while the container runs elsewhere than saved: waiting for Apply."
    )
    restart_status = serializers.CharField(allow_null=True)
    runtime = serializers.CharField(required=False, allow_null=True)
    container = serializers.CharField(required=False, allow_blank=True)
    started_at = serializers.DateTimeField(required=False, allow_null=True)
    last_apply = serializers.CharField(required=False, allow_null=True)
    error = serializers.CharField(required=False)
    vram_used_mb = serializers.IntegerField(
        allow_null=True, required=False, help_text="Measured at the last scan; null: unmeasured"
    )
    vram_peak_mb = serializers.IntegerField(
        allow_null=True, required=False, help_text="Largest over GPUCONFIG_VRAM_WINDOW"
    )
    vram_p95_mb = serializers.IntegerField(
        allow_null=True, required=False, help_text="95th percentile over GPUCONFIG_VRAM_WINDOW"
    )


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
    stall = serializers.CharField(
        allow_blank=True,
        help_text="Why an unfinished apply does not move (its worker stopped, or none runs); "
        "empty otherwise.",
    )
    in_progress = serializers.BooleanField()
    services_pending = serializers.ListField(child=serializers.CharField())
    services_completed = serializers.ListField(child=serializers.CharField())
    service_statuses = ServiceStatusSerializer(many=True)
    services = LiveServiceSerializer(many=True)


class ServicesSerializer(serializers.Serializer):
    services = LiveServiceSerializer(many=True)
