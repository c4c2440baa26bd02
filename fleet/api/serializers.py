"""The fleet API's shapes (for responses and the OpenAPI schema)."""

from rest_framework import serializers

from fleet.models import HostState


class HostSerializer(serializers.Serializer):
    name = serializers.CharField()
    display_name = serializers.CharField()
    state = serializers.ChoiceField(choices=HostState.choices)
    last_heartbeat = serializers.DateTimeField(allow_null=True)
    gpus = serializers.IntegerField(
        help_text="GPUs the host's scans have found (kept while lost); 0 before its first scan",
    )
    agent_version = serializers.CharField(allow_blank=True)
