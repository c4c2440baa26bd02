"""The fleet API's shapes (for responses and the OpenAPI schema)."""

from rest_framework import serializers

from fleet.models import HostState


class HostSerializer(serializers.Serializer):
    name = serializers.CharField()
    display_name = serializers.CharField()
    state = serializers.ChoiceField(choices=HostState.choices)
    last_heartbeat = serializers.DateTimeField(allow_null=True)
    gpus = serializers.IntegerField(
        allow_null=True,
        help_text="GPUs detected on the host; null while its scans do not reach the centre",
    )
    agent_version = serializers.CharField(allow_blank=True)
