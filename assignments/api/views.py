"""Assignments room, API: the saved configuration, its compose check and lint, rules, versions,
export and import, the catalog; thin views over the services and selectors."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from assignments.api import serializers as s
from assignments.files.tools import AUTO, KINDS
from assignments.selectors import (
    compose_report,
    config_current,
    config_read_cached,
    lint_report,
    rules_current,
    service_list,
    version_list,
)
from assignments.services import config_save
from assignments.services.history import (
    config_export,
    config_import,
    config_import_prepare,
    version_diff,
    version_restore,
)
from assignments.services.rules import rules_replace

NEEDS_PARAMETER = OpenApiParameter(
    "needs",
    str,
    required=False,
    enum=["measured", "catalog"],
    description="Plan with the measured VRAM of each service where enough was recorded "
    "(measured, the default) or with the catalog's estimates only (catalog).",
)


def _config_answer() -> dict:
    return dict(s.GpuConfigSerializer(config_current()).data)


class GpuConfigView(APIView):
    """The saved strategy and assignments; PUT validates everything, then saves and writes the
    generated files. A refused PUT changes nothing."""

    @extend_schema(
        parameters=[NEEDS_PARAMETER],
        responses={200: s.GpuConfigSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_retrieve",
    )
    def get(self, request):
        needs = s.NeedsInputSerializer.validated(request.query_params)["needs"]
        if needs is None:  # the default read, kept (serialized) in the cache while nothing changed
            return Response(config_read_cached(_config_answer))
        return Response(s.GpuConfigSerializer(config_current(needs=needs)).data)

    @extend_schema(
        request=s.GpuConfigUpdateInputSerializer,
        responses={200: s.SaveResultSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_update",
    )
    def put(self, request):
        given = s.GpuConfigUpdateInputSerializer.validated(request.data)
        result = config_save(**given, user=request.user)
        current = config_current()
        return Response(
            s.SaveResultSerializer(
                {
                    "success": True,
                    "version": result.version.pk if result.version else None,
                    "changed": result.changed,
                    "notices": result.notices,
                    **current,
                }
            ).data
        )


class ComposeView(APIView):
    """What each managed service really gets from the base compose file(s) plus the generated
    files, checked by the compose tool's own ``config`` (or the merge model when none is
    installed), with the commands to run."""

    @extend_schema(
        parameters=[OpenApiParameter("tool", str, required=False, enum=[AUTO, *KINDS])],
        responses={200: s.ComposeCheckSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_compose",
    )
    def get(self, request):
        report = compose_report(**s.ComposeInputSerializer.validated(request.query_params))
        return Response(s.ComposeCheckSerializer(report).data)


class LintView(APIView):
    """The lint of the user's stack: what keeps an assignment from taking effect or wastes a
    GPU, each finding with its fix."""

    @extend_schema(responses={200: s.LintSerializer}, operation_id="gpu_config_lint")
    def get(self, request):
        return Response(s.LintSerializer(lint_report()).data)


class AiServicesView(APIView):
    """The service catalog with VRAM estimates."""

    @extend_schema(responses=s.AiServiceListSerializer, operation_id="ai_services_list")
    def get(self, request):
        return Response({"services": s.AiServiceSerializer(service_list(), many=True).data})


# --- rules and history -------------------------------------------------------------------------


class RulesView(APIView):
    """The user's rules (pin, exclusive, never with, priority); PUT replaces them all,
    validated first (a refused PUT changes nothing). The answer carries the saved
    configuration's warnings: rule conflicts (``rule_conflict``) and broken rules among them."""

    @extend_schema(responses=s.RulesSerializer, operation_id="gpu_config_rules_retrieve")
    def get(self, request):
        return Response(s.RulesSerializer(rules_current()).data)

    @extend_schema(
        request=s.RulesUpdateInputSerializer,
        responses={200: s.RulesSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_rules_update",
    )
    def put(self, request):
        rules_replace(**s.RulesUpdateInputSerializer.validated(request.data))
        return Response(s.RulesSerializer(rules_current()).data)


class VersionsView(APIView):
    """Saved configuration versions, newest first."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 1000},
                required=False,
                description="1–1000, default 50",
            )
        ],
        responses={200: s.VersionListSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_versions_list",
    )
    def get(self, request):
        limit = s.VersionsInputSerializer.validated(request.query_params)["limit"]
        versions = [
            {
                "id": v.pk,
                "created_at": v.created_at,
                "actor": v.actor,
                "source": v.source,
                "strategy": v.strategy,
                "assignments": v.assignments,
                "warnings": v.warnings,
            }
            for v in version_list(limit=limit)
        ]
        return Response(s.VersionListSerializer({"versions": versions}).data)


class VersionDiffView(APIView):
    """Per service, the GPU and budget in version ``a`` and in version ``b``, where they
    differ (404 for an unknown version)."""

    @extend_schema(
        responses={200: s.DiffSerializer, 404: OpenApiTypes.OBJECT},
        operation_id="gpu_config_versions_diff",
    )
    def get(self, request, a: int, b: int):
        return Response(s.DiffSerializer(version_diff(a=a, b=b)).data)


def _history_answer(result, prepared, *, dry_run: bool) -> Response:
    current = config_current()
    return Response(
        s.HistorySaveSerializer(
            {
                "success": True,
                "dry_run": dry_run,
                "version": result.version.pk if result and result.version else None,
                "changed": bool(result.changed) if result else bool(prepared.changes),
                "strategy": prepared.strategy,
                "changes": prepared.changes,
                "gpu_matches": prepared.gpu_matches,
                "skipped": prepared.skipped,
                "warnings": current["warnings"],
                "warning_details": current["warning_details"],
            }
        ).data
    )


class VersionRestoreView(APIView):
    """Roll back to a version: its strategy and assignments (GPUs found by UUID) become the
    saved configuration again, recorded as a new version. Apply is a separate step."""

    @extend_schema(
        request=None,
        responses={
            200: s.HistorySaveSerializer,
            400: OpenApiTypes.OBJECT,
            404: OpenApiTypes.OBJECT,
        },
        operation_id="gpu_config_versions_restore",
    )
    def post(self, request, version_id: int):
        result, prepared = version_restore(version_id=version_id, user=request.user)
        return _history_answer(result, prepared, dry_run=False)


class ExportView(APIView):
    """The saved configuration as YAML, to import on another box."""

    @extend_schema(
        # The body is a YAML document whose top level is a mapping (strategy, gpus,
        # assignments, rules): described as the object it parses to, not as a string.
        responses={(200, "application/yaml"): OpenApiTypes.OBJECT},
        operation_id="gpu_config_export",
    )
    def get(self, request):
        response = HttpResponse(config_export(), content_type="application/yaml; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="gpuconfig.yml"'
        return response


class RawTextParser(BaseParser):
    """The body as text, whatever its media type (an import is YAML, often sent as text)."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return stream.read().decode("utf-8") if stream is not None else ""
        except UnicodeDecodeError:
            raise exceptions.ParseError("The body is not UTF-8 text.") from None


class ImportView(APIView):
    """Import a configuration exported as YAML (the body). GPUs are matched by UUID, then by
    name and size; unknown services and GPUs are refused with a 400 naming them. With
    ``?dry_run=1`` it answers what it would change and changes nothing."""

    parser_classes = [RawTextParser]

    @extend_schema(
        request={"application/yaml": OpenApiTypes.STR},
        parameters=[OpenApiParameter("dry_run", bool, required=False)],
        responses={200: s.HistorySaveSerializer, 400: OpenApiTypes.OBJECT},
        operation_id="gpu_config_import",
    )
    def post(self, request):
        given = s.ImportInputSerializer.validated(
            {
                "text": request.data if isinstance(request.data, str) else "",
                "dry_run": request.query_params.get("dry_run") or False,
            }
        )
        text = given["text"]
        if given["dry_run"]:
            return _history_answer(None, config_import_prepare(text), dry_run=True)
        result, prepared = config_import(text=text, user=request.user)
        return _history_answer(result, prepared, dry_run=False)
