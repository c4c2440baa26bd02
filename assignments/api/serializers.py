"""Assignments room. Shapes of the assignments API, documented in the OpenAPI schema: what each
endpoint answers, and (``*InputSerializer``) what each one takes, checked before its service is
called.

An input serializer checks the input's shape and types; the service it feeds checks what needs
the database (a service the catalog knows, a GPU present, a budget the service takes), names
the service and field it refuses, and is shared with the page, the admin and the CLI.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from assignments import planner
from assignments.files.tools import AUTO, KINDS
from assignments.models import AiService
from assignments.planner.needs import NEEDS
from gpuconfig_site.api import InputSerializer, bounded_integer
from gpuconfig_site.errors import echo


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


@extend_schema_field(AssignmentSerializer(many=True))
class AssignmentListField(serializers.ListField):
    """``assignments``: a list of objects, each checked by ``config_save`` (which names the
    service and the field it refuses, as the page's form does)."""

    default_error_messages = {
        "not_a_list": "assignments must be a list of "
        "{{service, gpu_index, vram_budget_override}}, not {input_type}.",
    }


class GpuConfigUpdateInputSerializer(InputSerializer):
    """Body of PUT /gpu-config: a strategy, assignments, or both. A PUT replaces each given
    service's assignment (an omitted budget is none); services not given keep theirs."""

    body_example = '{"strategy": ..., "assignments": [...]}'

    class Meta:
        ref_name = "GpuConfigUpdate"  # the schema's name for this body, as before

    strategy = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        help_text=f"One of: {', '.join(planner.strategy_names())}; null keeps the saved one.",
    )
    assignments = AssignmentListField(required=False, allow_null=True)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError(
                "Nothing to save: give a strategy, assignments, or both."
            )
        return attrs


STRATEGIES = tuple(planner.strategy_names())


def _choice(name: str, value: str, choices) -> str:
    """``value`` when it is one of ``choices``, else the refusal naming them (an empty value
    too: the schema's enum is the whole truth)."""
    if value not in choices:
        raise serializers.ValidationError(
            f"{name} must be one of: {', '.join(choices)} (got {echo(value)})."
        )
    return value


class NeedsInputSerializer(InputSerializer):
    """``?needs=`` of GET /gpu-config and the preview: absent is the default (measured)."""

    needs = serializers.CharField(
        required=False, default=None, allow_blank=True, trim_whitespace=False
    )

    def validate_needs(self, value):
        return None if value is None else _choice("needs", value, NEEDS)


class PreviewInputSerializer(NeedsInputSerializer):
    """Query of GET /gpu-config/preview: the strategy to plan with (required)."""

    strategy = serializers.CharField(
        allow_blank=True,
        trim_whitespace=False,
        error_messages={"required": f"Give ?strategy= one of: {', '.join(STRATEGIES)}."},
    )

    def validate_strategy(self, value):
        if not value:
            raise serializers.ValidationError(self.fields["strategy"].error_messages["required"])
        return value  # an unknown name is the planner's to refuse (UnknownStrategyError)


class ComposeInputSerializer(InputSerializer):
    """Query of GET /gpu-config/compose: the compose tool to check with (default: auto)."""

    tool = serializers.CharField(
        required=False, default=None, allow_blank=True, trim_whitespace=False
    )

    def validate_tool(self, value):
        if value is None:
            return None
        # Also an empty ?tool=: the schema's enum is the whole truth.
        if value not in (AUTO, *KINDS):
            raise serializers.ValidationError(
                f"Unknown compose tool {echo(value)}; expected one of: {', '.join((AUTO, *KINDS))}."
            )
        return value


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


@extend_schema_field(RuleSerializer(many=True))
class RuleListField(serializers.ListField):
    """``rules``: a list of objects, each checked by ``rules_replace`` (which names the service
    and the rule it refuses)."""

    default_error_messages = {
        "not_a_list": "rules must be a list of "
        "{{service, pin_gpu_uuid, exclusive, never_with, priority}}, not {input_type}."
    }


class RulesUpdateInputSerializer(InputSerializer):
    """Body of PUT /gpu-config/rules: the whole new set of rules."""

    body_example = '{"rules": [...]}'

    class Meta:
        ref_name = "RulesUpdate"  # the schema's name for this body, as before

    rules = RuleListField(
        # DRF formats its messages: the braces are doubled.
        error_messages={"required": 'The body must be a JSON object like {{"rules": [...]}}.'}
    )


class VersionsInputSerializer(InputSerializer):
    """Query of GET /gpu-config/versions."""

    limit = bounded_integer("limit", default=50, low=1, high=1000)


class ImportInputSerializer(InputSerializer):
    """POST /gpu-config/import: the exported YAML (the body) and ``?dry_run=``."""

    text = serializers.CharField(
        allow_blank=True,
        trim_whitespace=False,
        error_messages={"required": "Send the YAML of an exported configuration as the body."},
    )
    dry_run = serializers.BooleanField(required=False, default=False)

    def validate_text(self, value):
        if not value.strip():
            raise serializers.ValidationError(self.fields["text"].error_messages["required"])
        return value


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
