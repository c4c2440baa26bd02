"""Assignments room: response shapes of the assignments API (documented in the OpenAPI schema)."""

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
    rules = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="rule_conflict, rule_broken: the rules in question, in words.",
    )
    remedies = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="rule_conflict, rule_broken: changes any one of which lets the rules hold.",
    )


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
    notices = serializers.ListField(
        child=serializers.CharField(),
        help_text="What the save did beyond the request (a lowered budget that went with a move).",
    )
    strategy = serializers.CharField()
    assignments = AssignmentSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    warning_details = WarningDetailSerializer(many=True)
    updated_at = serializers.DateTimeField(allow_null=True)


class MoveFieldsMixin(serializers.Serializer):
    """How a service moves to its new GPU (applies/moves.py)."""

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
    needs = serializers.ChoiceField(
        choices=["measured", "catalog"], help_text="The figure the needs were taken from."
    )


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
    form = serializers.CharField(
        help_text="How the base gives the service its GPU, forms joined by +: reservation, "
        "cdi, runtime, cuda, gpus; none"
    )
    assigned = serializers.ListField(child=serializers.CharField())
    effective = serializers.ListField(
        child=serializers.CharField(),
        help_text="The GPUs the service uses after the merge, read from every form (count:N "
        "or all where the engine picks).",
    )
    ok = serializers.BooleanField()
    problem = serializers.CharField(allow_blank=True)


class ComposeInactiveSerializer(serializers.Serializer):
    service = serializers.CharField()
    profiles = serializers.ListField(child=serializers.CharField())
    form = serializers.CharField()


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
    notice = serializers.CharField(
        allow_blank=True, help_text="What to set when no base compose file is configured"
    )
    preview = serializers.CharField(
        allow_blank=True,
        help_text="For ?tool= other than the tool in use: where that tool's files were written",
    )
    files_dir = serializers.CharField(help_text="The folder the commands' generated files are in")
    profiles = serializers.ListField(
        child=serializers.CharField(), help_text="Active compose profiles"
    )
    inactive = ComposeInactiveSerializer(many=True)


class LintFindingSerializer(serializers.Serializer):
    rule = serializers.CharField()
    service = serializers.CharField(allow_blank=True, help_text="empty: the host or the stack")
    message = serializers.CharField()
    fix = serializers.CharField()


class LintSerializer(serializers.Serializer):
    findings = LintFindingSerializer(many=True)
    error = serializers.CharField(allow_blank=True)
    notice = serializers.CharField(allow_blank=True)


class RuleSerializer(serializers.Serializer):
    """One service's rule (``GET/PUT /gpu-config/rules``)."""

    service = serializers.CharField()
    pin_gpu_uuid = serializers.CharField(
        allow_blank=True, allow_null=True, required=False, help_text="Pin to this GPU (UUID)."
    )
    exclusive = serializers.BooleanField(required=False, help_text="No other service on its GPU.")
    never_with = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Services kept off its GPU."
    )
    priority = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=1000,
        help_text="Higher keeps its budget and its rules longer when something must give.",
    )


class RulesUpdateSerializer(serializers.Serializer):
    """Request body of PUT /gpu-config/rules: the whole new set (validated in the service)."""

    rules = RuleSerializer(many=True)


class RulesSerializer(serializers.Serializer):
    rules = RuleSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    warning_details = WarningDetailSerializer(many=True)


class VersionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    actor = serializers.CharField(allow_blank=True)
    source = serializers.CharField()
    strategy = serializers.CharField()
    assignments = AssignmentSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())


class VersionListSerializer(serializers.Serializer):
    versions = VersionSerializer(many=True)


class ChangeSideSerializer(serializers.Serializer):
    gpu_index = serializers.IntegerField(allow_null=True)
    vram_budget_override = serializers.FloatField(allow_null=True)


class ChangeSerializer(serializers.Serializer):
    service = serializers.CharField()
    before = ChangeSideSerializer(allow_null=True, help_text="null: not in the older side")
    after = ChangeSideSerializer(allow_null=True, help_text="null: not in the newer side")


class DiffSerializer(serializers.Serializer):
    from_version = serializers.IntegerField()
    to_version = serializers.IntegerField()
    changes = ChangeSerializer(many=True)


class GpuMatchSerializer(serializers.Serializer):
    from_uuid = serializers.CharField(allow_blank=True)
    to_uuid = serializers.CharField()
    to_index = serializers.IntegerField()
    by = serializers.ChoiceField(choices=["uuid", "name_and_size"])


class HistorySaveSerializer(serializers.Serializer):
    """The answer of a rollback or an import (``dry_run``: only what it would change)."""

    success = serializers.BooleanField()
    dry_run = serializers.BooleanField()
    version = serializers.IntegerField(allow_null=True)
    changed = serializers.BooleanField()
    strategy = serializers.CharField()
    changes = ChangeSerializer(many=True)
    gpu_matches = GpuMatchSerializer(many=True)
    skipped = serializers.ListField(child=serializers.CharField())
    warnings = serializers.ListField(child=serializers.CharField())
    warning_details = WarningDetailSerializer(many=True)
